//! JSON-lines round trip: decisions for arbitrary users and features are written by the
//! JSON-lines sink and every line must decode to a record with the same id, user, slot,
//! variant, reason kind, propensity and used features. The log is started afresh once it
//! holds `MAX_LOG` bytes, so a long run keeps the temp filesystem bounded.
#![no_main]

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use elvon::sink::{DecisionRecord, JsonlSink};
use elvon::{Engine, Features};
use libfuzzer_sys::fuzz_target;

struct Rig {
    engine: Engine,
    sink: JsonlSink,
    reader: BufReader<std::fs::File>,
    _dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A directory removed on drop (kept dependency-free).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// The log is replaced by a new one (in a new directory) past this size.
const MAX_LOG: u64 = 8 << 20;

impl Rig {
    fn new() -> Rig {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n == 0 {
            remove_dead_runs();
        }
        let dir =
            std::env::temp_dir().join(format!("elvon-fuzz-record-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("log.jsonl");
        let sink = JsonlSink::create(&path, Default::default()).expect("sink");
        let engine = Engine::builder().sink(sink.clone()).build();
        engine
            .load_config_json(include_str!("../../tests/data/kinds.json"))
            .expect("valid");
        let mut file = std::fs::File::open(&path).expect("open log");
        file.seek(SeekFrom::End(0)).expect("seek");
        Rig {
            engine,
            sink,
            reader: BufReader::new(file),
            _dir: tempfile_dir::Dir(dir),
        }
    }
}

/// Removes the last log of earlier runs whose process is gone (the static rig is never
/// dropped, so each run leaves its last, at most `MAX_LOG`-sized, log behind).
fn remove_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("elvon-fuzz-record-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid != std::process::id().to_string()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn rig() -> &'static Mutex<Rig> {
    static R: OnceLock<Mutex<Rig>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(Rig::new()))
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |&b| b == 0);
    let user = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let value = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let n = parts.next().map_or(0, |p| {
        p.iter()
            .fold(0i64, |a, &b| a.wrapping_mul(31).wrapping_add(i64::from(b)))
    });
    let slots = [
        "serve",
        "split",
        "split_by_device",
        "score",
        "targeting",
        "fallback",
        "killed",
        "nope",
    ];
    let f = Features::new()
        .with("plan", value.clone())
        .with("device_id", value.clone())
        .with("email", value.clone())
        .with("tags", vec![value.clone()])
        .with("page_view_7d", n)
        .with("score", n as f64 / 7.0)
        .with(value.clone(), n);
    let mut rig = rig().lock().unwrap_or_else(|e| e.into_inner());
    let mut expected = Vec::new();
    for slot in slots {
        let d = rig.engine.decide(slot, &user, &f);
        expected.push((
            d.id(),
            slot,
            d.variant().map(str::to_owned),
            d.reason().kind().as_str(),
            d.propensity(),
        ));
    }
    rig.sink.flush(Duration::from_secs(30)).expect("flush");
    let stats = rig.sink.stats();
    assert_eq!(stats.offered, stats.written + stats.dropped + stats.failed);
    for (id, slot, variant, kind, p) in expected {
        let mut line = String::new();
        rig.reader.read_line(&mut line).expect("read");
        let r: DecisionRecord =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"));
        assert_eq!(r.id, id);
        assert_eq!(r.slot, slot);
        assert_eq!(r.user, user);
        assert_eq!(r.variant, variant);
        assert_eq!(r.reason.kind, kind);
        assert_eq!(r.propensity.to_bits(), p.to_bits());
        for (name, v) in r.features.iter() {
            assert_eq!(f.get(name), Some(v), "logged feature {name} differs");
        }
    }
    let size = rig.reader.stream_position().expect("position");
    if size >= MAX_LOG {
        // Everything written is checked: start a new log (the old directory is removed).
        *rig = Rig::new();
    }
});
