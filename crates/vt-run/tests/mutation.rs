//! Seeded mutations of the files a run reads back: safetensors weights, checkpoints (tensors,
//! `state.json`, `latest`), the TOML config and the JSON-lines log. Real files, written by a
//! tiny run, are truncated at many points, have random bytes flipped and their headers edited
//! (huge or zero lengths and dimensions, offsets past the end). Every case must return a value
//! or the reader's error, never panic; truncated or broken files are errors naming the file.

use candle_core::{DType, Device};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use vt_ops::mutate::{byte_flips, overwrite, truncations, Mutant};
use vt_ops::VarStore;
use vt_run::{saved_config, train, RunConfig, RunOptions};

const SEED: u64 = 0xbad_f11e;

/// A finished tiny run (shared by the tests of this file).
fn tiny_run() -> PathBuf {
    static RUN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("vt-run-mutation-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let mut cfg = RunConfig::small_data("vt_resnet18", 1, 16);
        cfg.model.width = 0.125;
        cfg.data.train_limit = Some(32);
        cfg.data.test_limit = Some(16);
        cfg.data.workers = 0;
        cfg.train.log_every = 1;
        train(cfg, &out, &Device::Cpu, &RunOptions::default()).unwrap();
        out
    })
    .clone()
}

/// Runs `read` on every mutant written to `path` (restoring the file afterwards) and returns
/// `(what, Ok(()) | Err(message))`; a panic fails the test naming the mutant.
fn outcomes<T, E: std::fmt::Display>(
    path: &Path,
    mutants: &[Mutant],
    read: impl Fn(&Path) -> Result<T, E>,
) -> Vec<(String, Result<(), String>)> {
    let original = std::fs::read(path).unwrap();
    let out = mutants
        .iter()
        .map(|m| {
            std::fs::write(path, &m.bytes).unwrap();
            let r = catch_unwind(AssertUnwindSafe(|| read(path))).unwrap_or_else(|_| {
                std::fs::write(path, &original).unwrap();
                panic!("{}: reader panicked on a file {}", path.display(), m.what)
            });
            (m.what.clone(), r.map(|_| ()).map_err(|e| e.to_string()))
        })
        .collect();
    std::fs::write(path, &original).unwrap();
    out
}

fn errors_name(path: &Path, outcomes: &[(String, Result<(), String>)], all_errors: bool) {
    let name = path.file_name().unwrap().to_string_lossy();
    for (what, r) in outcomes {
        match r {
            Ok(()) if all_errors => panic!("{}: a file {what} was read as valid", path.display()),
            Ok(()) => {}
            Err(e) => assert!(e.contains(&*name), "{what}: `{e}` does not name {name}"),
        }
    }
}

/// safetensors header edits: its 8-byte length, and the JSON's offsets and shapes.
fn safetensors_edits(bytes: &[u8]) -> Vec<Mutant> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8_lossy(&bytes[8..8 + n]).to_string();
    let edit = |from: &str, to: &str, what: &str| {
        let h = header.replacen(from, to, 1);
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&bytes[8 + n..]);
        Mutant {
            what: what.into(),
            bytes: out,
        }
    };
    let offsets = header.find("\"data_offsets\":[").expect("offsets") + 16;
    let first_offsets = &header[offsets..offsets + header[offsets..].find(']').unwrap()];
    let shape = header.find("\"shape\":[").expect("shape") + 9;
    let first_shape = &header[shape..shape + header[shape..].find(']').unwrap()];
    vec![
        overwrite(bytes, 0, &[0xff; 8], "with a header length of 2^64 - 1"),
        overwrite(bytes, 0, &[0; 8], "with a header length of 0"),
        overwrite(
            bytes,
            0,
            &(n as u64 + 7).to_le_bytes(),
            "with a header length past its JSON",
        ),
        edit(
            first_offsets,
            "0,99999999999",
            "with data offsets past the end",
        ),
        edit(first_offsets, "64,8", "with reversed data offsets"),
        edit(
            first_shape,
            "4294967295,4294967295,4294967295",
            "with a huge shape",
        ),
        edit(first_shape, "0", "with a zero shape"),
        edit("\"F32\"", "\"Q99\"", "with an unknown dtype"),
    ]
}

#[test]
fn weights_and_checkpoint_tensors() {
    let run = tiny_run();
    let cfg = saved_config(&run).unwrap();
    // weights exported by the store, read back into the model: every cut and header edit is
    // an error naming the file (a wrong shape is the store's listed-keys error)
    let weights = run.join("weights.safetensors");
    let store = VarStore::seeded(1, DType::F32, &Device::Cpu);
    vt_run::Net::new(&cfg.model, &store).unwrap();
    store.save(&weights).unwrap();
    let load = |p: &Path| -> candle_core::Result<()> {
        let s = VarStore::from_safetensors(p, DType::F32, &Device::Cpu)?;
        vt_run::Net::new(&cfg.model, &s).map_err(candle_core::Error::wrap)?;
        s.finish()
    };
    let bytes = std::fs::read(&weights).unwrap();
    errors_name(
        &weights,
        &outcomes(&weights, &truncations(&bytes, 16), load),
        true,
    );
    errors_name(
        &weights,
        &outcomes(&weights, &safetensors_edits(&bytes), load),
        true,
    );
    errors_name(
        &weights,
        &outcomes(&weights, &byte_flips(&bytes, SEED, 48, None), load),
        false,
    );
    errors_name(
        &weights,
        &outcomes(&weights, &byte_flips(&bytes, SEED, 48, Some(0..600)), load),
        false,
    );

    // the checkpoint's tensors, through the loader a resume uses
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let dir = run.join("checkpoints").join(latest.trim());
    let load = |_: &Path| vt_train::checkpoint::load_latest(&run, &Device::Cpu);
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let p = dir.join(f);
        let bytes = std::fs::read(&p).unwrap();
        errors_name(&p, &outcomes(&p, &truncations(&bytes, 8), load), true);
        errors_name(&p, &outcomes(&p, &safetensors_edits(&bytes), load), true);
        errors_name(
            &p,
            &outcomes(&p, &byte_flips(&bytes, SEED + 1, 24, Some(0..400)), load),
            false,
        );
    }
}

#[test]
fn checkpoint_state_config_and_log() {
    let run = tiny_run();
    let latest = run.join("checkpoints/latest");
    let name = std::fs::read_to_string(&latest).unwrap();
    let state = run.join("checkpoints").join(name.trim()).join("state.json");
    let load = |_: &Path| vt_train::checkpoint::load_latest(&run, &Device::Cpu);
    // state.json: JSON cut short is never valid
    let bytes = std::fs::read(&state).unwrap();
    errors_name(
        &state,
        &outcomes(&state, &truncations(&bytes, 16), load),
        true,
    );
    errors_name(
        &state,
        &outcomes(&state, &byte_flips(&bytes, SEED, 48, None), load),
        false,
    );
    let edits = [
        Mutant {
            what: "with a negative step".into(),
            bytes: String::from_utf8_lossy(&bytes)
                .replacen("\"step\": ", "\"step\": -", 1)
                .into_bytes(),
        },
        Mutant {
            what: "with a step past u64".into(),
            bytes: String::from_utf8_lossy(&bytes)
                .replacen("\"step\": ", "\"step\": 99999999999999999999", 1)
                .into_bytes(),
        },
    ];
    errors_name(&state, &outcomes(&state, &edits, load), true);
    // `latest` naming a checkpoint that is not there
    let bytes = std::fs::read(&latest).unwrap();
    for (what, r) in outcomes(&latest, &byte_flips(&bytes, SEED, 16, None), load) {
        if let Err(e) = r {
            assert!(e.contains("latest") || e.contains("step-"), "{what}: {e}");
        }
    }

    // config.toml: a cut is an error unless it only shortens the last line's value
    let config = run.join("config.toml");
    let bytes = std::fs::read(&config).unwrap();
    let last_line = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap();
    let cuts: Vec<Mutant> = truncations(&bytes, 32)
        .into_iter()
        .filter(|m| m.bytes.len() <= last_line)
        .collect();
    errors_name(&config, &outcomes(&config, &cuts, RunConfig::load), true);
    errors_name(
        &config,
        &outcomes(
            &config,
            &byte_flips(&bytes, SEED, 64, None),
            RunConfig::load,
        ),
        false,
    );

    // log.jsonl: a torn last line is a kill's mark and is skipped; anything else broken in a
    // line is an error naming the file and line
    let log = run.join("log.jsonl");
    let bytes = std::fs::read(&log).unwrap();
    errors_name(
        &log,
        &outcomes(&log, &truncations(&bytes, 32), vt_train::read_log),
        false,
    );
    let flips = outcomes(
        &log,
        &byte_flips(&bytes, SEED, 64, None),
        vt_train::read_log,
    );
    errors_name(&log, &flips, false);
    assert!(
        flips.iter().filter(|(_, r)| r.is_err()).count() > 32,
        "most flips break a record"
    );
}
