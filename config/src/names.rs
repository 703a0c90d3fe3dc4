//! Resource name rules as Kubernetes checks them (RFC 1123 subdomains and labels).

/// Longest RFC 1123 subdomain (`metadata.name` of most kinds).
pub const MAX_SUBDOMAIN_LEN: usize = 253;
/// Longest RFC 1123 label (`metadata.namespace`).
pub const MAX_LABEL_LEN: usize = 63;

/// Checks a `metadata.name` as Kubernetes does for custom resources: a lowercase RFC 1123
/// subdomain (`[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`, at most 253
/// characters).
///
/// ```
/// use evmesh_config::names::dns1123_subdomain;
/// assert!(dns1123_subdomain("orders.v1").is_ok());
/// assert!(dns1123_subdomain("../../etc").is_err());
/// ```
pub fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.len() > MAX_SUBDOMAIN_LEN {
        return Err(format!(
            "must be no more than {MAX_SUBDOMAIN_LEN} characters (it has {})",
            name.len()
        ));
    }
    if name.split('.').all(is_label) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a lowercase RFC 1123 subdomain: it must consist of lower case \
             alphanumeric characters, '-' or '.', and must start and end with an alphanumeric \
             character (e.g. 'example.com')"
        ))
    }
}

/// Checks a `metadata.namespace` as Kubernetes does: a lowercase RFC 1123 label
/// (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters).
///
/// ```
/// use evmesh_config::names::dns1123_label;
/// assert!(dns1123_label("team-a").is_ok());
/// assert!(dns1123_label("a/b").is_err());
/// ```
pub fn dns1123_label(name: &str) -> Result<(), String> {
    if name.len() > MAX_LABEL_LEN {
        return Err(format!(
            "must be no more than {MAX_LABEL_LEN} characters (it has {})",
            name.len()
        ));
    }
    if is_label(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a lowercase RFC 1123 label: it must consist of lower case \
             alphanumeric characters or '-', and must start and end with an alphanumeric \
             character (e.g. 'my-name')"
        ))
    }
}

fn is_label(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&first), Some(&last)) => {
            alnum(first) && alnum(last) && b.iter().all(|&c| alnum(c) || c == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kubernetes_rules() {
        for ok in [
            "a",
            "default",
            "orders-v1",
            "a.b.c",
            "0abc",
            &"a".repeat(253),
        ] {
            assert!(dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a/b",
            "../../etc",
            "Orders",
            "-a",
            "a-",
            "a..b",
            "a_b",
            ".a",
            &"a".repeat(254),
        ] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
        assert!(dns1123_label("team-a").is_ok());
        for bad in ["a.b", "a/b", "A", &"a".repeat(64)] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
    }
}
