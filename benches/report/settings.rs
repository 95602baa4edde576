//! The report's command line: `--quick`, `--out PATH`, `--max-load L`, `--only
//! redlock|etcd|postgres`, and the sizes of every section.

use std::path::PathBuf;
use std::time::Duration;

pub struct Settings {
    pub quick: bool,
    /// `--only etcd`: run section 9 alone and print it (written only with `--out`).
    pub only_etcd: bool,
    /// `--only postgres`: run section 10 alone and print it (written only with `--out`).
    pub only_postgres: bool,
    pub out: PathBuf,
    pub max_load: Option<f64>,
    pub latency_rounds: usize,
    pub latency_ops: usize,
    pub design_rounds: usize,
    pub design_ops: usize,
    pub throughput_rounds: usize,
    pub throughput_window: Duration,
    pub contention_rounds: usize,
    pub contention_window: Duration,
    pub renewal_rounds: usize,
    pub renewal_windows: usize,
    /// Cycles per variant and round of the Redlock latency comparison.
    pub redlock_ops: usize,
    /// `--only redlock`: run section 8 alone and print it (written only with `--out`).
    pub only_redlock: bool,
    pub out_given: bool,
    /// A criterion-style name filter (`cargo bench -- lock_unlock` passes it to every
    /// bench target): the report runs only when `report` contains it.
    pub filter: Option<String>,
}

impl Settings {
    pub fn from_args() -> Settings {
        let mut s = Settings {
            quick: false,
            only_etcd: false,
            only_postgres: false,
            out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md"),
            max_load: None,
            latency_rounds: 15,
            latency_ops: 2_000,
            design_rounds: 9,
            design_ops: 1_000,
            throughput_rounds: 5,
            throughput_window: Duration::from_millis(300),
            contention_rounds: 3,
            contention_window: Duration::from_millis(700),
            renewal_rounds: 2,
            renewal_windows: 2,
            redlock_ops: 1_000,
            only_redlock: false,
            out_given: false,
            filter: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => {
                    s.quick = true;
                    s.latency_rounds = 3;
                    s.latency_ops = 300;
                    s.design_rounds = 3;
                    s.design_ops = 200;
                    s.throughput_rounds = 2;
                    s.throughput_window = Duration::from_millis(100);
                    s.contention_rounds = 1;
                    s.contention_window = Duration::from_millis(200);
                    s.renewal_rounds = 1;
                    s.renewal_windows = 1;
                    s.redlock_ops = 200;
                }
                "--out" => {
                    s.out = PathBuf::from(args.next().expect("--out PATH"));
                    s.out_given = true;
                }
                "--only" => match args.next().as_deref() {
                    Some("redlock") => s.only_redlock = true,
                    Some("etcd") => s.only_etcd = true,
                    Some("postgres") => s.only_postgres = true,
                    other => {
                        panic!("--only: expected `redlock`, `etcd` or `postgres`, got {other:?}")
                    }
                },
                "--max-load" => {
                    s.max_load = Some(
                        args.next()
                            .and_then(|v| v.parse().ok())
                            .expect("--max-load NUMBER"),
                    )
                }
                "--bench" => {} // passed by `cargo bench` to every bench target; ignored
                filter if !filter.starts_with('-') => s.filter = Some(filter.to_owned()),
                other => panic!(
                    "unknown argument {other:?} (--quick, --out PATH, --max-load L, --only redlock|etcd|postgres)"
                ),
            }
        }
        s
    }
}
