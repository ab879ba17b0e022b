//! `omega-brainctl [--socket PATH] [--json] OP ...`: one socket operation.
//! Prints a readable summary, or with `--json` the daemon's `result` verbatim.
//! Exits non-zero when the daemon answers with an error or cannot be reached.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use omega_brain_daemon::client;
use serde_json::{json, Value};

/// Talk to omega-braind.
#[derive(Debug, Parser)]
#[command(name = "omega-brainctl", version, about)]
struct Cli {
    /// The daemon's socket (default: $OMEGA_DATA_DIR/brain.sock, else ./brain.sock).
    #[arg(long, env = "OMEGA_SOCKET")]
    socket: Option<PathBuf>,
    /// Print the daemon's result as JSON, verbatim.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, Subcommand)]
enum Op {
    /// Recommendations for a context.
    Recommend {
        /// Local hour 0–23 (default: now, UTC).
        #[arg(long)]
        hour: Option<u8>,
        /// Day of week 0–6, 0 = Monday (default: today, UTC).
        #[arg(long)]
        weekday: Option<u8>,
        /// Recently watched content ids, newest first.
        #[arg(long, value_delimiter = ',')]
        recent: Vec<String>,
        /// Free-text mood.
        #[arg(long)]
        mood: Option<String>,
        /// How many.
        #[arg(short = 'k', long = "k", default_value_t = 10)]
        k: u32,
    },
    /// Report a viewing event.
    Observe {
        /// Content id.
        id: String,
        /// Share watched, 0–1.
        #[arg(long)]
        fraction: f64,
        /// Unix seconds (default now).
        #[arg(long)]
        at: Option<u64>,
        /// Local hour.
        #[arg(long)]
        hour: Option<u8>,
        /// Day of week.
        #[arg(long)]
        weekday: Option<u8>,
    },
    /// Import a JSON-lines catalog file (the daemon reads the file: it must
    /// lie inside the daemon's catalog_import_dir).
    CatalogImport {
        /// The file.
        file: PathBuf,
    },
    /// Counters.
    Stats,
    /// Model, store, index and actor health.
    Health,
    /// Erase the viewing history and local patterns.
    Forget,
    /// Sync with the constellation now.
    SyncNow,
}

fn request(op: &Op) -> Result<Value> {
    Ok(match op {
        Op::Recommend {
            hour,
            weekday,
            recent,
            mood,
            k,
        } => {
            let mut r = json!({"op": "recommend", "k": k});
            if let Some(h) = hour {
                r["hour"] = json!(h);
            }
            if let Some(w) = weekday {
                r["weekday"] = json!(w);
            }
            if !recent.is_empty() {
                r["recent"] = json!(recent);
            }
            if let Some(m) = mood {
                r["mood"] = json!(m);
            }
            r
        }
        Op::Observe {
            id,
            fraction,
            at,
            hour,
            weekday,
        } => {
            let mut r = json!({"op": "observe", "content_id": id, "fraction": fraction});
            if let Some(a) = at {
                r["at"] = json!(a);
            }
            if let Some(h) = hour {
                r["hour"] = json!(h);
            }
            if let Some(w) = weekday {
                r["weekday"] = json!(w);
            }
            r
        }
        Op::CatalogImport { file } => {
            let abs = std::fs::canonicalize(file)
                .with_context(|| format!("catalog file {}", file.display()))?;
            json!({"op": "catalog.import", "path": abs})
        }
        Op::Stats => json!({"op": "stats"}),
        Op::Health => json!({"op": "health"}),
        Op::Forget => json!({"op": "forget"}),
        Op::SyncNow => json!({"op": "sync.now"}),
    })
}

fn print_readable(op: &Op, result: &Value) {
    match op {
        Op::Recommend { .. } => {
            let items = result["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                println!("(no recommendations: the catalog is empty?)");
            }
            for (i, it) in items.iter().enumerate() {
                println!(
                    "{:>2}. {}  [{}]  {:.2}  {}",
                    i + 1,
                    it["title"].as_str().unwrap_or("?"),
                    it["content_id"].as_str().unwrap_or("?"),
                    it["confidence"].as_f64().unwrap_or(0.0),
                    it["reason_text"].as_str().unwrap_or(""),
                );
            }
        }
        Op::Observe { .. } => println!(
            "recorded (episode {}, patterns changed: {}, known item: {})",
            result["seq"], result["patterns_changed"], result["known_item"]
        ),
        Op::CatalogImport { .. } => println!(
            "imported {} items ({} written); the catalog holds {}",
            result["imported"], result["upserted"], result["catalog_items"]
        ),
        Op::Forget => println!("history and local patterns erased"),
        _ => {
            if let Some(obj) = result.as_object() {
                for (k, v) in obj {
                    println!("{k}: {v}");
                }
            } else {
                println!("{result}");
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let socket = cli.socket.clone().unwrap_or_else(|| {
        std::env::var_os("OMEGA_DATA_DIR")
            .map_or_else(|| PathBuf::from("."), PathBuf::from)
            .join("brain.sock")
    });
    let mut req = request(&cli.op)?;
    req["id"] = json!(1);
    let resp = client::call(&socket, &req).await?;
    if resp["ok"] == json!(true) {
        if cli.json {
            println!("{}", resp["result"]);
        } else {
            print_readable(&cli.op, &resp["result"]);
        }
        Ok(())
    } else {
        let code = resp["error"]["code"].as_str().unwrap_or("unknown");
        let msg = resp["error"]["message"].as_str().unwrap_or("");
        if cli.json {
            println!("{}", resp["error"]);
        }
        bail!("{code}: {msg}")
    }
}
