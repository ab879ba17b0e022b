//! `omega-sim fleet` on a small fleet (2,000 TVs, 2 days, 2 regions): the
//! real node code in virtual time. Two runs with one seed agree on
//! everything the seed decides; the figures are there and plausible; the
//! spreading title reaches its region's TVs; the federation job is timed.

use omega_sim::fleet::{run, FleetOptions, FleetReport};

fn small(seed: u64) -> FleetOptions {
    FleetOptions {
        devices: 2000,
        days: 2,
        regions: 2,
        seed,
        titles: 200,
        clusters: 4,
        trend_day: 0,
        trend_share: 0.8,
        // A smaller round than the node's 200 (the members' work grows
        // with n²), still one a TV accepts (t >= 10, 2t - n + 1 >= 10).
        cohort: 60,
        threshold: 40,
        progress: false,
        ..FleetOptions::default()
    }
}

/// What the seed alone decides: everything but the measured costs and what
/// follows from the privacy noise (OpenDP's, from the OS: the learned
/// totals, hence the fleet pages and the later rounds' layouts).
fn scheduled(r: &FleetReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r.without_measured()).expect("serializes");
    let first_fold = r.rounds.iter().map(|f| f.minute).min();
    let o = v.as_object_mut().expect("an object");
    for key in [
        "up_bytes_per_device_day",
        "down_bytes_per_device_day",
        "round_up_bytes_per_device_day",
        "syncs_per_s_mean",
        "syncs_per_s_peak",
        "syncs_per_s_by_hour",
        "run_syncs_per_s_by_hour",
        "syncs_total",
        "syncs_run",
        "syncs_elided",
        "syncs_per_s_peak_400m",
        "nodes_for_400m",
        "nodes_for_400m_no_headroom",
        "trend_reach_minutes_p50",
        "trend_reach_minutes_p90",
        "trend_published_minutes",
        "rounds",
        "rounds_declined",
        "round_members",
        "checked_cursors",
        "trend_watches",
    ] {
        o.remove(key);
    }
    o.insert("first_fold".into(), serde_json::json!(first_fold));
    v
}

#[test]
fn a_small_fleet_is_deterministic_and_its_figures_are_plausible() {
    let a = run(&small(7)).expect("first run");
    let b = run(&small(7)).expect("second run");
    assert_eq!(scheduled(&a), scheduled(&b), "one seed, one schedule");
    // Before the first fold nothing depends on the noise: the hours before
    // it carry the same syncs in both runs.
    let first = a
        .rounds
        .iter()
        .map(|f| f.minute)
        .min()
        .expect("a round folded");
    let hours = (first / 60) as usize;
    assert!(hours >= 1, "the first fold comes after an hour: {first}");
    assert_eq!(a.syncs_per_s_by_hour.len(), 24, "one figure per UTC hour");
    let c = run(&small(8)).expect("another seed");
    assert_ne!(scheduled(&a), scheduled(&c), "the seed matters");

    for r in [&a, &b] {
        // Every TV syncs every 5-15 minutes: 2000 TVs make 2.2-6.7 syncs/s.
        assert!(
            (2.2..=7.0).contains(&r.syncs_per_s_mean),
            "{}",
            r.syncs_per_s_mean
        );
        assert!(r.syncs_per_s_peak >= r.syncs_per_s_mean);
        assert!(r.syncs_run >= 2000, "each TV's first sync is run");
        assert_eq!(r.sync_errors, 0);
        // An idle sync is tens of bytes each way; rounds and pages add more.
        assert!(
            r.up_bytes_per_device_day > 96.0 * 20.0,
            "{}",
            r.up_bytes_per_device_day
        );
        assert!(
            r.down_bytes_per_device_day > 96.0 * 10.0,
            "{}",
            r.down_bytes_per_device_day
        );
        assert!(r.up_bytes_per_device_day < 1e7 && r.down_bytes_per_device_day < 1e7);
        assert!(r.watches_per_device_day > 0.5 && r.watches_per_device_day < 20.0);
        // The title spread: published by the node's thresholds, then held
        // by half and nine tenths of the region's TVs within the run.
        assert!(r.trend_watches > 100, "{}", r.trend_watches);
        let p50 = r.trend_reach_minutes_p50.expect("half the region holds it");
        let p90 = r.trend_reach_minutes_p90.expect("nine tenths hold it");
        assert!(
            p50 > 0.0 && p50 <= p90 && p90 < 2.0 * 24.0 * 60.0,
            "{p50} {p90}"
        );
        let published = r.trend_published_minutes.expect("published");
        assert!(published <= p50);
        // The federation job, timed at the fleet's size.
        assert_eq!(
            r.federation_ms.keys().copied().collect::<Vec<_>>(),
            vec![2000]
        );
        assert!(r.federation_ms[&2000] >= 0.0);
        assert_eq!(r.federation_work[&2000].devices, 2000);
        assert!(r.nodes_for_400m >= r.nodes_for_400m_no_headroom);
        assert!(r.nodes_for_400m_no_headroom >= 1);
        assert!(
            r.checked_cursors > 0,
            "the TV core's fleet cursor was compared"
        );
    }
}

/// Bad options are refused with an error naming the option, before any
/// simulated minute runs.
#[test]
fn bad_options_are_refused_with_a_clear_error() {
    let cases: Vec<(&str, FleetOptions)> = vec![
        (
            "--devices",
            FleetOptions {
                devices: 0,
                ..small(1)
            },
        ),
        (
            "--days",
            FleetOptions {
                days: 0,
                ..small(1)
            },
        ),
        (
            "regions",
            FleetOptions {
                regions: 9,
                ..small(1)
            },
        ),
        (
            "--trend-region",
            FleetOptions {
                trend_region: 7,
                ..small(1)
            },
        ),
        (
            "--trend-share",
            FleetOptions {
                trend_share: f64::NAN,
                ..small(1)
            },
        ),
        (
            "--trend-share",
            FleetOptions {
                trend_share: 1.5,
                ..small(1)
            },
        ),
        (
            "--node-syncs-per-sec",
            FleetOptions {
                node_syncs_per_sec: 0.0,
                ..small(1)
            },
        ),
        (
            "threshold",
            FleetOptions {
                cohort: 60,
                threshold: 70,
                ..small(1)
            },
        ),
    ];
    for (what, opts) in cases {
        let e = run(&opts).expect_err(what);
        let text = format!("{e:#}");
        assert!(text.contains(what), "{what}: {text}");
    }
}
