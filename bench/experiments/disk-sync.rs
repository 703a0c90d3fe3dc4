// A disk's fdatasync tail, without evmesh: an active writer does a 1 KiB pwrite + fdatasync at
// RATE/s (open loop: latency counted from each write's due time) into a 64 MiB file (ACTIVE=zeroed,
// the default, or sparse) in DIR (default /tmp/disk-sync.d);
// at SPARE_AT s a thread writes SPARE_MB of zeros in CHUNK_K KiB steps (fdatasync each, PAUSE_US
// between; IOIDLE=1: under the idle I/O class), as a spare segment is written.
//   rustc -O bench/experiments/disk-sync.rs -o /tmp/disk-sync && SECS=6 SPARE_MB=0 /tmp/disk-sync
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};
extern "C" {
    fn syscall(n: i64, ...) -> i64;
}
/// Creates (or empties) the file at `path` for reading and writing.
fn create(path: &str) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}
fn env(k: &str, d: f64) -> f64 {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}
fn main() {
    let rate = env("RATE", 1000.0);
    let secs = env("SECS", 10.0);
    let chunk = env("CHUNK_K", 1024.0) as usize * 1024;
    let pause = env("PAUSE_US", 2000.0) as u64;
    let spare_mb = env("SPARE_MB", 64.0) as u64;
    let spare_at = env("SPARE_AT", 2.0);
    let zeroed = std::env::var("ACTIVE")
        .map(|v| v == "zeroed")
        .unwrap_or(true);
    let idle = std::env::var_os("IOIDLE").is_some();
    let dir = std::env::var("DIR").unwrap_or_else(|_| "/tmp/disk-sync.d".into());
    std::fs::create_dir_all(&dir).unwrap();
    let a = create(&format!("{dir}/active"));
    if zeroed {
        let z = vec![0u8; 1 << 20];
        for i in 0..64u64 {
            a.write_all_at(&z, i << 20).unwrap();
        }
        a.sync_all().unwrap();
    } else {
        a.set_len(64 << 20).unwrap();
        a.sync_all().unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let sdir = dir.clone();
    let sp = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(spare_at));
        if idle {
            let r = unsafe { syscall(251, 1i64, 0i64, 3i64 << 13) };
            assert_eq!(r, 0);
        }
        let s = create(&format!("{sdir}/spare"));
        let z = vec![0u8; chunk];
        let mut at = 0u64;
        let st = t0.elapsed();
        while at < spare_mb << 20 {
            s.write_all_at(&z, at).unwrap();
            s.sync_data().unwrap();
            at += chunk as u64;
            std::thread::sleep(Duration::from_micros(pause));
        }
        s.sync_all().unwrap();
        (st.as_secs_f64(), t0.elapsed().as_secs_f64())
    });
    let buf = vec![b'x'; 1024];
    let n = (rate * secs) as u64;
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        a.write_all_at(&buf, i * 1024).unwrap();
        a.sync_data().unwrap();
        lat.push((
            (due - t0).as_secs_f64(),
            Instant::now().saturating_duration_since(due).as_secs_f64() * 1000.0,
        ));
    }
    let (s0, s1) = sp.join().unwrap();
    let q = |v: &mut Vec<f64>, p: f64| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * p) as usize]
        }
    };
    let mut all: Vec<f64> = lat.iter().map(|x| x.1).collect();
    let mut dur: Vec<f64> = lat
        .iter()
        .filter(|x| x.0 >= s0 && x.0 <= s1)
        .map(|x| x.1)
        .collect();
    let mut out: Vec<f64> = lat
        .iter()
        .filter(|x| x.0 < s0 || x.0 > s1 + 0.5)
        .map(|x| x.1)
        .collect();
    let over5 = all.iter().filter(|x| **x > 5.0).count();
    println!(
        "active={} chunk={}K pause={}us idle={idle}: spare {:.2}s; all p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.1} (>5ms {over5}) | during n={} p99 {:.2} p99.9 {:.2} max {:.1} | away n={} p99.9 {:.2} max {:.1}",
        if zeroed { "zeroed" } else { "sparse" },
        chunk / 1024,
        pause,
        s1 - s0,
        q(&mut all, 0.5),
        q(&mut all, 0.99),
        q(&mut all, 0.999),
        q(&mut all, 1.0),
        dur.len(),
        q(&mut dur, 0.99),
        q(&mut dur, 0.999),
        q(&mut dur, 1.0),
        out.len(),
        q(&mut out, 0.999),
        q(&mut out, 1.0)
    );
}
