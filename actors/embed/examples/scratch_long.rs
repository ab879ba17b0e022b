#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("dir"));
    let mbt: usize = std::env::args().nth(2).map_or(2048, |s| s.parse().expect("n"));
    omega_embed::configure_candle_threads(None);
    let e = omega_embed::Embedder::load(&dir, omega_embed::EmbedderOptions { max_batch_tokens: mbt, ..Default::default() }).expect("load");
    let texts: Vec<String> = (0..400).map(|i| format!("story {i}: {}", "a young wizard attends a school of magic and discovers the truth about his parents ".repeat(8))).collect();
    println!("tokens {}", e.token_count(&texts[0]).expect("t"));
    for t in &texts[..10] { e.embed(t).expect("e"); }
    let mut lat: Vec<f64> = texts[10..110].iter().map(|t| { let s = std::time::Instant::now(); e.embed(t).expect("e"); s.elapsed().as_secs_f64() * 1e6 }).collect();
    lat.sort_by(f64::total_cmp);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let s = std::time::Instant::now();
    for c in refs[110..366].chunks(32) { e.embed_batch(c).expect("b"); }
    let rate = 256.0 / s.elapsed().as_secs_f64();
    let st = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = st.lines().find(|l| l.starts_with("VmHWM")).unwrap_or("");
    println!("long single p50 {:.0} us, batch32 of 128-token texts {rate:.1}/s (max_batch_tokens {mbt}) {hwm}", lat[50]);
}
