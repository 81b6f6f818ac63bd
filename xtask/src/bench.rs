//! `cargo xtask bench`: criterion benchmarks, `target/machvm-bench/summary.json` and ratio
//! tables of machvm against each anchor implementation.
//!
//! Criterion groups are named `<crate>/<case>` and function ids are implementation names
//! (`machvm`, `x86_64`, ...). Results are read from `target/criterion/**/new/benchmark.json`
//! and the sibling `estimates.json`; only files written during this run are used.
//!
//! Benches may add fields to a result's `extra` by appending JSON lines
//! `{"suite": .., "case": .., "impl": .., "extra": {..}}` to the file named by the
//! `MACHVM_BENCH_EXTRA` environment variable (set by xtask to the absolute path of
//! `target/machvm-bench/extra.jsonl`, which is truncated at the start of each run).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use crate::cargo::{Action, Cargo};
use crate::cli::BenchArgs;
use crate::util::run_cmd;
use crate::workspace::{Package, Workspace, files_under};

const STEP: &str = "bench";

/// The implementation every ratio is relative to.
pub const OURS: &str = "machvm";

/// One benchmark result.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// Crate short name (`addr`).
    pub suite: String,
    /// Case name (`align_up`, or `align_up/4096` for parameterised benches).
    pub case: String,
    /// Implementation name (`machvm`, `x86_64`, ...).
    pub imp: String,
    /// Median nanoseconds per element (per iteration without an element throughput).
    pub ns_per_op: f64,
    /// Extra figures (`gb_per_s`, ratios written by the bench).
    pub extra: Map<String, Value>,
}

/// Parses one criterion result from `benchmark.json` and `estimates.json`.
pub fn parse_result(benchmark: &str, estimates: &str) -> Result<BenchResult> {
    let b: Value = serde_json::from_str(benchmark).context("parsing benchmark.json")?;
    let e: Value = serde_json::from_str(estimates).context("parsing estimates.json")?;
    let group = b["group_id"]
        .as_str()
        .context("benchmark.json has no group_id")?;
    let (suite, case) = group.split_once('/').unwrap_or((group, ""));
    let mut case = case.to_owned();
    if let Some(value) = b["value_str"].as_str() {
        if case.is_empty() {
            case = value.to_owned();
        } else {
            case = format!("{case}/{value}");
        }
    }
    let imp = b["function_id"].as_str().unwrap_or("default").to_owned();
    let median_ns = e
        .pointer("/median/point_estimate")
        .and_then(Value::as_f64)
        .context("estimates.json has no median.point_estimate")?;
    let throughput = &b["throughput"];
    let count = |key: &str| throughput[key].as_u64().filter(|n| *n > 0);
    let elements = count("Elements").or_else(|| {
        throughput
            .pointer("/ElementsAndBytes/elements")
            .and_then(Value::as_u64)
    });
    let bytes = count("Bytes")
        .or_else(|| count("BytesDecimal"))
        .or_else(|| {
            throughput
                .pointer("/ElementsAndBytes/bytes")
                .and_then(Value::as_u64)
        });
    let mut extra = Map::new();
    if let Some(bytes) = bytes {
        if median_ns > 0.0 {
            // bytes per nanosecond is GB/s (10^9 bytes per second).
            extra.insert("gb_per_s".into(), json!(bytes as f64 / median_ns));
        }
    }
    let ns_per_op = match elements {
        Some(n) if n > 0 => median_ns / n as f64,
        _ => median_ns,
    };
    Ok(BenchResult {
        suite: suite.to_owned(),
        case,
        imp,
        ns_per_op,
        extra,
    })
}

/// Merges `extra.jsonl` lines into matching results. Returns warnings for lines that are
/// malformed or match no result.
pub fn merge_extras(results: &mut [BenchResult], jsonl: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    for (i, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                warnings.push(format!("extra.jsonl line {}: {e}", i + 1));
                continue;
            }
        };
        let (Some(suite), Some(case), Some(imp), Some(extra)) = (
            v["suite"].as_str(),
            v["case"].as_str(),
            v["impl"].as_str(),
            v["extra"].as_object(),
        ) else {
            warnings.push(format!(
                "extra.jsonl line {}: needs suite, case, impl and an extra object",
                i + 1
            ));
            continue;
        };
        let Some(r) = results
            .iter_mut()
            .find(|r| r.suite == suite && r.case == case && r.imp == imp)
        else {
            warnings.push(format!(
                "extra.jsonl line {}: no result for {suite}/{case}/{imp}",
                i + 1
            ));
            continue;
        };
        r.extra.extend(extra.clone());
    }
    warnings
}

/// Returns the summary JSON array.
pub fn summary_json(results: &[BenchResult]) -> Value {
    Value::Array(
        results
            .iter()
            .map(|r| {
                json!({
                    "suite": r.suite,
                    "case": r.case,
                    "impl": r.imp,
                    "ns_per_op": r.ns_per_op,
                    "extra": r.extra,
                })
            })
            .collect(),
    )
}

fn fmt_ns(ns: f64) -> String {
    if ns < 10.0 {
        format!("{ns:.3}")
    } else if ns < 1000.0 {
        format!("{ns:.1}")
    } else {
        format!("{ns:.0}")
    }
}

/// Formats a ratio like `2.31x`.
pub fn fmt_ratio(ratio: f64) -> String {
    format!("{ratio:.2}x")
}

/// Returns the geometric mean of `values` (None when empty).
pub fn geomean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let log_sum: f64 = values.iter().map(|v| v.ln()).sum();
    Some((log_sum / values.len() as f64).exp())
}

/// Returns whether `imp` names one of machvm's implementations: `machvm`, or `machvm-…` in
/// suites that compare several variants of ours (the compressor's codecs).
fn is_ours(imp: &str) -> bool {
    imp == OURS || imp.starts_with("machvm-")
}

/// The `extra` key under which a bench records our speed against `anchor` from paired
/// passes (the anchor's time over ours).
fn paired_key(anchor: &str) -> String {
    format!("speed_vs_{anchor}")
}

/// Formats ratio `r` for a table cell (`-` when missing or not a positive finite number) and
/// records it under `key` for the geometric mean.
fn ratio_cell<'a>(
    ratios: &mut BTreeMap<(&'a str, &'a str), Vec<f64>>,
    key: (&'a str, &'a str),
    r: Option<f64>,
) -> String {
    match r {
        Some(r) if r > 0.0 && r.is_finite() => {
            ratios.entry(key).or_default().push(r);
            fmt_ratio(r)
        }
        _ => "-".into(),
    }
}

/// Renders the ratio tables, one per suite: case, machvm ns/op, then per anchor its ns/op and
/// anchor/machvm (>1 means machvm is faster), and a geometric-mean row. When a bench also
/// measured the two in alternation and recorded `extra.speed_vs_<anchor>` on our rows, a
/// `paired` column shows that figure next to the ratio of the separately measured rows.
///
/// The implementation called `machvm` is the reference when a suite has one (its other
/// `machvm-…` variants are then compared with it like anchors). A suite without it but with
/// several `machvm-…` implementations gets one row per case and variant, each compared with
/// every anchor, and one geometric-mean row per variant.
pub fn ratio_tables(results: &[BenchResult]) -> String {
    let suites: BTreeSet<&str> = results.iter().map(|r| r.suite.as_str()).collect();
    let mut out = String::new();
    for suite in suites {
        let rows: Vec<&BenchResult> = results.iter().filter(|r| r.suite == suite).collect();
        let ours: Vec<&str> = if rows.iter().any(|r| r.imp == OURS) {
            vec![OURS]
        } else {
            let set: BTreeSet<&str> = rows
                .iter()
                .map(|r| r.imp.as_str())
                .filter(|i| is_ours(i))
                .collect();
            set.into_iter().collect()
        };
        let has_ours = !ours.is_empty();
        let variants = ours.len() > 1;
        let anchors: BTreeSet<&str> = rows
            .iter()
            .map(|r| r.imp.as_str())
            .filter(|i| !ours.contains(i))
            .collect();
        let cases: BTreeSet<&str> = rows.iter().map(|r| r.case.as_str()).collect();
        let ns = |case: &str, imp: &str| {
            rows.iter()
                .find(|r| r.case == case && r.imp == imp)
                .map(|r| r.ns_per_op)
        };
        let paired = |case: &str, imp: &str, anchor: &str| {
            rows.iter()
                .find(|r| r.case == case && r.imp == imp)
                .and_then(|r| r.extra.get(&paired_key(anchor)))
                .and_then(Value::as_f64)
        };
        let with_paired: BTreeSet<&str> = anchors
            .iter()
            .copied()
            .filter(|a| {
                let key = paired_key(a);
                rows.iter().any(|r| r.extra.contains_key(&key))
            })
            .collect();
        let ours_label = if variants { "machvm-…" } else { OURS };
        let mut header = vec!["case".to_owned()];
        if variants {
            header.push("impl".to_owned());
        }
        if has_ours {
            header.push(format!("{ours_label} ns/op"));
        }
        for a in &anchors {
            header.push(format!("{a} ns/op"));
            if has_ours {
                header.push(format!("{a}/{ours_label}"));
            }
            if has_ours && with_paired.contains(a) {
                header.push("paired".to_owned());
            }
        }
        let mut table = vec![header];
        let mut ratios: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
        let mut paired_ratios: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
        let ours_rows: Vec<Option<&str>> = if has_ours {
            ours.iter().map(|o| Some(*o)).collect()
        } else {
            vec![None]
        };
        for case in &cases {
            for imp in &ours_rows {
                let mine = imp.and_then(|i| ns(case, i));
                if variants && mine.is_none() {
                    continue;
                }
                let mut row = vec![(*case).to_owned()];
                if variants {
                    row.push(imp.unwrap_or_default().to_owned());
                }
                if has_ours {
                    row.push(mine.map_or("-".into(), fmt_ns));
                }
                for a in &anchors {
                    let theirs = ns(case, a);
                    row.push(theirs.map_or("-".into(), fmt_ns));
                    let key = (imp.unwrap_or_default(), *a);
                    if has_ours {
                        let r = theirs.zip(mine).map(|(t, o)| t / o);
                        row.push(ratio_cell(&mut ratios, key, r));
                    }
                    if has_ours && with_paired.contains(a) {
                        let r = imp.and_then(|i| paired(case, i, a));
                        row.push(ratio_cell(&mut paired_ratios, key, r));
                    }
                }
                table.push(row);
            }
        }
        if has_ours && !anchors.is_empty() {
            for imp in &ours {
                let mut row = vec!["geomean".to_owned()];
                if variants {
                    row.push((*imp).to_owned());
                }
                row.push(String::new());
                for a in &anchors {
                    row.push(String::new());
                    let g = ratios.get(&(*imp, *a)).and_then(|r| geomean(r));
                    row.push(g.map_or("-".into(), fmt_ratio));
                    if with_paired.contains(a) {
                        let g = paired_ratios.get(&(*imp, *a)).and_then(|r| geomean(r));
                        row.push(g.map_or("-".into(), fmt_ratio));
                    }
                }
                table.push(row);
            }
        }
        let _ = writeln!(out, "== {suite}");
        out.push_str(&render(&table, if variants { 2 } else { 1 }));
        out.push('\n');
    }
    out
}

/// Renders `table` in aligned columns: the first `left` columns left-aligned, the rest right.
fn render(table: &[Vec<String>], left: usize) -> String {
    let cols = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            table
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c == 0 {
                let _ = write!(line, "{cell:<w$}", w = widths[c]);
            } else if c < left {
                let _ = write!(line, "  {cell:<w$}", w = widths[c]);
            } else {
                let _ = write!(line, "  {cell:>w$}", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Finds `new/benchmark.json` files under `dir` modified at or after `since`.
fn fresh_results(dir: &Path, since: SystemTime) -> Vec<PathBuf> {
    files_under(dir, |path| {
        path.file_name().is_some_and(|n| n == "benchmark.json")
            && path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == "new")
            && std::fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since)
    })
}

fn sort_results(results: &mut [BenchResult]) {
    results.sort_by(|a, b| {
        (&a.suite, &a.case, !is_ours(&a.imp), &a.imp).cmp(&(
            &b.suite,
            &b.case,
            !is_ours(&b.imp),
            &b.imp,
        ))
    });
}

/// Runs the benchmarks and reports.
pub fn run(args: &BenchArgs) -> Result<()> {
    let ws = Workspace::load(STEP)?;
    let crates: Vec<&Package> = ws.select(&args.crates, |p| p.dir.join("benches").is_dir())?;
    if crates.is_empty() {
        bail!("step `{STEP}`: no crate under crates/ has a benches/ directory");
    }
    let out_dir = ws.target_dir.join("machvm-bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let extra_path = out_dir.join("extra.jsonl");
    std::fs::write(&extra_path, "")
        .with_context(|| format!("truncating {}", extra_path.display()))?;
    // File times can be coarser than the clock; allow a little slack.
    let start = SystemTime::now() - std::time::Duration::from_secs(2);
    for pkg in &crates {
        if pkg.benches.is_empty() {
            bail!("step `{STEP}`: {} has no bench targets", pkg.name);
        }
        // Name the bench targets: `--benches` would also run the lib's libtest harness, which
        // rejects criterion flags such as `--quick`.
        let mut flags = Vec::new();
        for b in &pkg.benches {
            flags.push("--bench".to_owned());
            flags.push(b.clone());
        }
        let mut cargo = Cargo::new(Action::Bench)
            .package(&pkg.name)
            .flags(flags)
            .env("MACHVM_BENCH_EXTRA", extra_path.to_string_lossy())
            .cwd(&ws.root);
        if args.quick {
            cargo = cargo.tool_args(["--quick"]);
        }
        run_cmd(STEP, &mut cargo.command())?;
    }
    let criterion_dir = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| ws.target_dir.join("criterion"));
    let suites: BTreeSet<&str> = crates.iter().map(|p| p.short_name()).collect();
    let mut results = Vec::new();
    for path in fresh_results(&criterion_dir, start) {
        let dir = path.parent().context("result path has no parent")?;
        let benchmark = std::fs::read_to_string(&path)?;
        let estimates = std::fs::read_to_string(dir.join("estimates.json"))
            .with_context(|| format!("reading estimates next to {}", path.display()))?;
        let r = parse_result(&benchmark, &estimates)
            .with_context(|| format!("in {}", path.display()))?;
        if suites.contains(r.suite.as_str()) {
            results.push(r);
        } else {
            eprintln!(
                "[{STEP}] note: {}/{} ({}) is not named `<crate>/<case>` for a benchmarked crate; ignored",
                r.suite, r.case, r.imp
            );
        }
    }
    if results.is_empty() {
        bail!(
            "step `{STEP}`: no fresh criterion results under {}",
            criterion_dir.display()
        );
    }
    let jsonl = std::fs::read_to_string(&extra_path).unwrap_or_default();
    for w in merge_extras(&mut results, &jsonl) {
        eprintln!("[{STEP}] warning: {w}");
    }
    sort_results(&mut results);
    let summary_path = out_dir.join("summary.json");
    let text = serde_json::to_string_pretty(&summary_json(&results))?;
    std::fs::write(&summary_path, text + "\n")
        .with_context(|| format!("writing {}", summary_path.display()))?;
    println!("{}", ratio_tables(&results));
    println!(
        "{} results written to {}",
        results.len(),
        summary_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real criterion 0.8 output (trimmed estimates).
    const ALIGN_X86: &str = r#"{"group_id":"addr/align_up","function_id":"x86_64","value_str":null,"throughput":{"Elements":1000},"full_id":"addr/align_up/x86_64","directory_name":"addr_align_up/x86_64","title":"addr/align_up/x86_64"}"#;
    const ESTIMATES_587: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":575.2,"upper_bound":599.0},"point_estimate":590.0,"standard_error":8.4},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":575.2,"upper_bound":599.0},"point_estimate":587.0,"standard_error":8.4},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":0.0,"upper_bound":17.6},"point_estimate":17.6,"standard_error":8.8},"slope":null,"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":0.0,"upper_bound":16.8},"point_estimate":16.8,"standard_error":8.4}}"#;
    const COPY_BYTES: &str = r#"{"group_id":"addr/copy","function_id":"machvm","value_str":"4096","throughput":{"Bytes":4096},"full_id":"addr/copy/machvm/4096","directory_name":"addr_copy/machvm/4096","title":"addr/copy/machvm/4096"}"#;
    const PLAIN: &str = r#"{"group_id":"addr/plain","function_id":null,"value_str":null,"throughput":null,"full_id":"addr/plain","directory_name":"addr_plain","title":"addr/plain"}"#;

    fn est(median: f64) -> String {
        format!(r#"{{"median":{{"point_estimate":{median}}}}}"#)
    }

    fn result(suite: &str, case: &str, imp: &str, ns: f64) -> BenchResult {
        BenchResult {
            suite: suite.into(),
            case: case.into(),
            imp: imp.into(),
            ns_per_op: ns,
            extra: Map::new(),
        }
    }

    #[test]
    fn elements_throughput_divides_median() {
        let r = parse_result(ALIGN_X86, ESTIMATES_587).unwrap();
        assert_eq!(r.suite, "addr");
        assert_eq!(r.case, "align_up");
        assert_eq!(r.imp, "x86_64");
        assert!((r.ns_per_op - 0.587).abs() < 1e-12);
        assert!(r.extra.is_empty());
    }

    #[test]
    fn bytes_throughput_records_gb_per_s() {
        let r = parse_result(COPY_BYTES, &est(2048.0)).unwrap();
        assert_eq!(r.case, "copy/4096");
        assert_eq!(r.ns_per_op, 2048.0);
        assert_eq!(r.extra["gb_per_s"], json!(2.0));
    }

    #[test]
    fn no_function_id_or_throughput() {
        let r = parse_result(PLAIN, &est(0.5)).unwrap();
        assert_eq!((r.case.as_str(), r.imp.as_str()), ("plain", "default"));
        assert_eq!(r.ns_per_op, 0.5);
    }

    #[test]
    fn extras_merge_and_warn() {
        let mut rs = vec![result("compressor", "wkdm", "machvm", 10.0)];
        let jsonl = concat!(
            r#"{"suite":"compressor","case":"wkdm","impl":"machvm","extra":{"ratio":2.5}}"#,
            "\n\nnot json\n",
            r#"{"suite":"compressor","case":"lz4","impl":"machvm","extra":{}}"#,
            "\n"
        );
        let warnings = merge_extras(&mut rs, jsonl);
        assert_eq!(rs[0].extra["ratio"], json!(2.5));
        assert_eq!(warnings.len(), 2);
        assert!(warnings[1].contains("no result for compressor/lz4/machvm"));
    }

    #[test]
    fn summary_has_the_agreed_fields() {
        let s = summary_json(&[result("addr", "align_up", "machvm", 1.5)]);
        assert_eq!(
            s,
            json!([{"suite": "addr", "case": "align_up", "impl": "machvm",
                    "ns_per_op": 1.5, "extra": {}}])
        );
    }

    #[test]
    fn geomean_of_ratios() {
        assert_eq!(geomean(&[]), None);
        assert!((geomean(&[2.0, 8.0]).unwrap() - 4.0).abs() < 1e-12);
        assert_eq!(fmt_ratio(2.3149), "2.31x");
    }

    #[test]
    fn table_with_anchors_and_geomean() {
        let mut rs = vec![
            result("addr", "align_up", "x86_64", 2.0),
            result("addr", "align_up", "machvm", 1.0),
            result("addr", "range_iter", "machvm", 4.0),
            result("addr", "range_iter", "x86_64", 32.0),
            result("addr", "range_iter", "aarch64-paging", 2.0),
        ];
        sort_results(&mut rs);
        assert_eq!(rs[0].imp, "machvm");
        let t = ratio_tables(&rs);
        let expected = "\
== addr
case        machvm ns/op  aarch64-paging ns/op  aarch64-paging/machvm  x86_64 ns/op  x86_64/machvm
align_up           1.000                     -                      -         2.000          2.00x
range_iter         4.000                 2.000                  0.50x          32.0          8.00x
geomean                                                         0.50x                        4.00x

";
        assert_eq!(t, expected);
    }

    /// Two variants of ours and one anchor, in two cases.
    fn compressor_rows() -> Vec<BenchResult> {
        vec![
            result("compressor", "compress_4k", "lz4_flex", 4000.0),
            result("compressor", "compress_4k", "machvm-wkdm", 1000.0),
            result("compressor", "compress_4k", "machvm-hybrid", 2000.0),
            result("compressor", "decompress_4k", "lz4_flex", 1000.0),
            result("compressor", "decompress_4k", "machvm-wkdm", 2000.0),
        ]
    }

    #[test]
    fn table_of_machvm_variants_compares_each_with_every_anchor() {
        let mut rs = compressor_rows();
        sort_results(&mut rs);
        assert!(rs[0].imp.starts_with("machvm-"));
        let expected = "\
== compressor
case           impl           machvm-… ns/op  lz4_flex ns/op  lz4_flex/machvm-…
compress_4k    machvm-hybrid            2000            4000              2.00x
compress_4k    machvm-wkdm              1000            4000              4.00x
decompress_4k  machvm-wkdm              2000            1000              0.50x
geomean        machvm-hybrid                                              2.00x
geomean        machvm-wkdm                                                1.41x

";
        assert_eq!(ratio_tables(&rs), expected);
    }

    #[test]
    fn table_shows_paired_speed_where_recorded() {
        let mut rs = compressor_rows();
        rs[1].extra.insert("speed_vs_lz4_flex".into(), json!(3.5));
        rs[4].extra.insert("speed_vs_lz4_flex".into(), json!(0.875));
        // Other extras are not paired speeds.
        rs[2].extra.insert("ratio".into(), json!(2.9));
        sort_results(&mut rs);
        let expected = "\
== compressor
case           impl           machvm-… ns/op  lz4_flex ns/op  lz4_flex/machvm-…  paired
compress_4k    machvm-hybrid            2000            4000              2.00x       -
compress_4k    machvm-wkdm              1000            4000              4.00x   3.50x
decompress_4k  machvm-wkdm              2000            1000              0.50x   0.88x
geomean        machvm-hybrid                                              2.00x       -
geomean        machvm-wkdm                                                1.41x   1.75x

";
        assert_eq!(ratio_tables(&rs), expected);
    }

    #[test]
    fn table_without_machvm_lists_numbers() {
        let rs = vec![
            result("zone", "alloc", "slab", 12.5),
            result("zone", "alloc", "linked_list_allocator", 1500.0),
        ];
        let expected = "\
== zone
case   linked_list_allocator ns/op  slab ns/op
alloc                         1500        12.5

";
        assert_eq!(ratio_tables(&rs), expected);
    }
}
