//! The README's main job runs end to end: `omega-sim demo` on a generated
//! catalog and a small fleet (the real model, node, TV daemon actors and
//! QUIC), and says what it did.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::model_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_the_loop_on_a_generated_catalog() {
    let work = tempfile::tempdir().unwrap();
    omega_sim::demo::run(omega_sim::demo::DemoOptions {
        model_dir: model_dir(),
        dataset: work.path().join("no-such-dataset"),
        work_dir: Some(work.path().to_owned()),
        fleet: 12,
    })
    .await
    .expect("the demo runs");
    let log = std::fs::read_to_string(work.path().join("demo.log")).unwrap();
    assert!(
        log.contains("aggregation round folded"),
        "no round folded:\n{log}"
    );
}
