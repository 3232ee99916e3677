//! `train --distributed` through the binary: without the `mpi` feature the flag names what is
//! missing; with it, 2-rank jobs under `mpirun` on the embedded Fashion-MNIST subset: a job
//! killed with `kill -9` resumes from its last checkpoint and ends where an uninterrupted one
//! ends, a different world size cannot resume it, and a rank that fails on bad data ends the
//! whole job with its error instead of leaving its peer waiting.

mod common;

#[cfg(not(feature = "mpi"))]
#[test]
fn without_the_mpi_feature_the_flag_says_what_is_missing() {
    let out = common::tmp_dir("no-mpi");
    let o = common::xtask(&[
        "train",
        "--distributed",
        "--model",
        "resnet18",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("the `mpi` feature"), "{err}");
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::common::tmp_dir;
    use std::path::Path;
    use std::process::{Child, Command, Output, Stdio};
    use std::time::{Duration, Instant};

    /// A tiny ResNet-18 on 512 embedded images, batch 32 (16 per rank), a checkpoint every 4
    /// of its 32 steps.
    const CONFIG: &str = r#"
[model]
preset = "resnet18"
width = 0.0625
stem = "small"
dropout = 0.0
drop_path = 0.0

[data]
image_size = 28
augment = "pad_crop_flip"
train_limit = 512
test_limit = 128
workers = 1

[train]
epochs = 2
batch_size = 32
seed = 4
label_smoothing = 0.1
checkpoint_every = 4
log_every = 1

[train.optimizer]
kind = "sgd"
momentum = 0.9
nesterov = true
weight_decay = 0.0005

[train.schedule]
lr = 0.1
warmup_epochs = 0.5
warmup_start_lr = 0.01

[train.schedule.decay]
kind = "cosine"
min_lr = 0.0
epochs = 1.5
"#;

    fn mpirun(n: usize, args: &[&str]) -> Command {
        let mut c = Command::new("mpirun");
        c.args(["-n", &n.to_string()])
            .arg(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env_remove("RUST_BACKTRACE");
        c
    }

    fn train_args<'a>(config: &'a str, out: &'a str) -> Vec<&'a str> {
        vec!["train", "--distributed", "--config", config, "--out", out]
    }

    /// The job's output, or a failure if it runs past `limit` (a hang).
    fn wait(mut child: Child, limit: Duration) -> Output {
        let t0 = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > limit {
                child.kill().unwrap();
                panic!("mpirun still running after {limit:?}: a rank hangs");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    }

    fn run(mut cmd: Command) -> Output {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mpirun (openmpi-bin) on PATH");
        wait(child, Duration::from_secs(300))
    }

    fn metrics(dir: &Path) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).unwrap()).unwrap()
    }

    /// The rank processes mpirun started (its children).
    fn ranks_of(mpirun: u32) -> Vec<u32> {
        let mut pids = vec![];
        for task in std::fs::read_dir(format!("/proc/{mpirun}/task")).unwrap() {
            let children = task.unwrap().path().join("children");
            let text = std::fs::read_to_string(children).unwrap_or_default();
            pids.extend(text.split_whitespace().map(|p| p.parse::<u32>().unwrap()));
        }
        pids
    }

    #[test]
    fn a_killed_two_rank_job_resumes_where_an_uninterrupted_one_ends() {
        let dir = tmp_dir("ddp-resume");
        let config = dir.join("config.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let config = config.to_str().unwrap();
        let whole = dir.join("whole");
        let o = run(mpirun(2, &train_args(config, whole.to_str().unwrap())));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        let m = metrics(&whole);
        assert_eq!(m["world_size"], 2);
        assert_eq!(m["steps"], 32, "512 / 32 x 2 epochs");

        // the same job, killed (kill -9 of a rank) once a checkpoint past step 8 exists
        let killed = dir.join("killed");
        let mut job = mpirun(2, &train_args(config, killed.to_str().unwrap()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        let latest = killed.join("checkpoints/latest");
        loop {
            let step = std::fs::read_to_string(&latest).unwrap_or_default();
            if step.trim() >= "step-000000008" {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(240), "no checkpoint");
            assert!(job.try_wait().unwrap().is_none(), "the job ended early");
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in ranks_of(job.id()) {
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .unwrap();
        }
        let _ = job.kill();
        job.wait().unwrap();
        assert!(
            !killed.join("metrics.json").exists(),
            "killed before the end"
        );

        let other_world = run(mpirun(
            1,
            &[
                "train",
                "--distributed",
                "--resume",
                "--out",
                killed.to_str().unwrap(),
            ],
        ));
        let err = String::from_utf8_lossy(&other_world.stderr);
        assert!(!other_world.status.success());
        assert!(
            err.contains("written by a run of 2 process(es); this run has 1"),
            "{err}"
        );

        let mut resume = train_args(config, killed.to_str().unwrap());
        resume.retain(|a| *a != "--config" && *a != config);
        resume.push("--resume");
        let o = run(mpirun(2, &resume));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (a, b) = (metrics(&whole), metrics(&killed));
        for key in ["top1", "top5", "loss", "steps"] {
            assert_eq!(a[key], b[key], "{key}: uninterrupted vs killed and resumed");
        }
    }

    #[test]
    fn a_rank_that_fails_on_bad_data_ends_the_job_with_its_error() {
        let dir = tmp_dir("ddp-bad-rank");
        // an image folder whose 6th image of the training order is a truncated PNG
        for split in ["train", "val"] {
            for (c, class) in ["a", "b"].iter().enumerate() {
                let d = dir.join("data").join(split).join(class);
                std::fs::create_dir_all(&d).unwrap();
                for i in 0..8u32 {
                    let img = image::GrayImage::from_fn(28, 28, |x, y| {
                        image::Luma([((x * 9 + y * 5 + i * 31) as u8) ^ (c as u8 * 128)])
                    });
                    img.save(d.join(format!("{i}.png"))).unwrap();
                }
            }
        }
        let bad = dir.join("data/train/b/3.png");
        let bytes = std::fs::read(&bad).unwrap();
        std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
        let out = dir.join("run");
        let o = run(mpirun(
            2,
            &[
                "train",
                "--distributed",
                "--model",
                "resnet18",
                "--width",
                "0.0625",
                "--image-size",
                "28",
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--data",
                dir.join("data").to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        ));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(err.contains("error on rank"), "{err}");
        assert!(err.contains("3.png"), "the message names the file: {err}");
    }
}
