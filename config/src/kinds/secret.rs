//! `v1` Secret: read (not served through the API) for the tokens sources use.

use serde_json::Value;

use crate::loader::Document;
use crate::model::ObjectMeta;
use crate::registry::{Kind, KindInfo, Pass};

/// The Secret kind.
pub struct Secret;

impl Kind for Secret {
    fn versions(&self) -> &'static [KindInfo] {
        &[]
    }
    fn reads(&self, api_version: &str, kind: &str, _meta: &ObjectMeta) -> bool {
        kind == "Secret" && api_version.split('/').next() == Some("v1")
    }
    fn validate<'a>(
        &self,
        pass: &mut Pass<'a>,
        doc: &'a Document,
        api_version: &str,
        meta: ObjectMeta,
        _spec: &Value,
    ) {
        let Some(obj) = doc.value.as_object() else {
            return;
        };
        if let Some(s) = crate::sources::check_secret(&mut pass.ctx, doc, api_version, meta, obj) {
            pass.secrets.push(s);
        }
    }
}
