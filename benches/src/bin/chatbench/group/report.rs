//! The group bench's report: human-readable lines, then one JSON line.

use std::time::Duration;

use serde::Serialize;

use super::GroupOptions;
use super::fanout::{CatchUp, FanOut};
use super::sender::GroupSent;
use crate::server::Server;
use crate::stats::{Latencies, Summary, round1, round3};

/// Wall and CPU time of one phase.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub wall: Duration,
    pub server_cpu: Duration,
    /// This process: the client side shares the machine's cores.
    pub client_cpu: Duration,
}

/// The pairs' send→deliver, by the phase of the scheduled send.
#[derive(Debug)]
pub struct Pairs {
    pub phase1: Latencies,
    pub phase2: Latencies,
    pub send_lag: Latencies,
    pub delivered: u64,
}

/// Everything the run measured, checked.
#[derive(Debug)]
pub struct Outcome {
    /// The group's seq after the setup: one event per request.
    pub base: u64,
    pub setup: Duration,
    /// Connecting and syncing the online members.
    pub connect: Duration,
    pub catch_up: CatchUp,
    pub sent: GroupSent,
    pub fan: FanOut,
    pub pairs: Pairs,
    pub phases: [Phase; 2],
}

pub fn print(server: &Server, options: &GroupOptions, outcome: &Outcome) {
    let line = JsonLine::new(server, options, outcome);
    println!(
        "group: {} members, {} of them online besides the sender; {} messages at {} msg/s; \
         {} pairs at {} msg/s each; {} s warm-up, phases of {} s; binary; server: {} shards, \
         durability {}",
        line.members,
        line.online,
        line.group_msgs,
        line.group_rate,
        line.pairs,
        line.pair_rate,
        line.warmup_s,
        line.seconds,
        line.shards,
        line.durability
    );
    println!(
        "  setup          group created in {:.3} s ({}); {} members connected and \
         synced in {:.3} s ({:.0} conn/s), {} catch-up msgs",
        line.setup_s,
        plural(outcome.base, "request"),
        line.online,
        line.connect_s,
        line.connects_per_s,
        line.catch_up_msgs
    );
    if let Some(example) = &outcome.catch_up.example {
        eprintln!(
            "chatbench: WARNING: {} members' sync catch-up was not the group's events from \
             their `joined` on; the first: {example}",
            outcome.catch_up.mismatched
        );
    }
    println!(
        "  group          {} msgs: {:.1} msg/s; {} fan-out deliveries: {:.0} deliveries/s",
        line.group_msgs,
        line.group_msgs_per_s,
        line.fanout_deliveries,
        line.fanout_deliveries_per_s
    );
    print_latencies(&line);
    print_phases(&line);
    server.print_log_summary();
    println!(
        "{}",
        serde_json::to_string(&line).expect("a struct of numbers and strings serializes")
    );
}

fn print_latencies(line: &JsonLine) {
    println!("  group latency (µs), from each message's scheduled send:");
    println!("{}", line.group_ack_us.line("→ack"));
    println!("{}", line.group_last_member_us.line("→last member"));
    println!("{}", line.group_median_member_us.line("→median member"));
    println!("{}", line.group_each_member_us.line("→each member"));
    println!("{}", line.group_send_lag_us.line("send lag"));
    println!("  pair send→deliver (µs), by the phase of the scheduled send:");
    println!("{}", line.pair_phase1_us.line("phase 1"));
    println!("{}", line.pair_phase2_us.line("phase 2"));
    println!(
        "  {:<14} p50 x{:.2}, p99 x{:.2}",
        "phase 2 / 1", line.pair_p50_ratio, line.pair_p99_ratio
    );
    println!("{}", line.pair_send_lag_us.line("send lag"));
}

fn print_phases(line: &JsonLine) {
    for (name, phase) in [("phase 1", &line.phase1), ("phase 2", &line.phase2)] {
        println!(
            "  {name:<14} {:.3} s: server CPU {:.3} s ({:.0}% of a core), client CPU {:.3} s \
             ({:.0}%)",
            phase.wall_s,
            phase.server_cpu_s,
            phase.server_cores * 100.0,
            phase.client_cpu_s,
            phase.client_cores * 100.0
        );
    }
    println!(
        "  fan-out cost   {:.2} µs of server CPU per delivery (phase 2's CPU above phase 1's \
         rate, over the deliveries)",
        line.server_cpu_us_per_fanout_delivery
    );
}

/// One phase in the JSON line.
#[derive(Debug, Serialize)]
struct PhaseJson {
    wall_s: f64,
    server_cpu_s: f64,
    /// Server CPU over wall time: cores kept busy.
    server_cores: f64,
    client_cpu_s: f64,
    client_cores: f64,
}

impl PhaseJson {
    fn new(phase: &Phase) -> PhaseJson {
        let wall = phase.wall.as_secs_f64().max(1e-9);
        PhaseJson {
            wall_s: round3(phase.wall.as_secs_f64()),
            server_cpu_s: round3(phase.server_cpu.as_secs_f64()),
            server_cores: round3(phase.server_cpu.as_secs_f64() / wall),
            client_cpu_s: round3(phase.client_cpu.as_secs_f64()),
            client_cores: round3(phase.client_cpu.as_secs_f64() / wall),
        }
    }
}

/// The machine-readable report, one JSON object, fields in this order.
#[derive(Debug, Serialize)]
struct JsonLine {
    bench: &'static str,
    members: usize,
    online: usize,
    pairs: usize,
    pair_rate: f64,
    group_rate: f64,
    warmup_s: f64,
    seconds: f64,
    shards: u16,
    durability: &'static str,
    encoding: &'static str,
    setup_s: f64,
    connect_s: f64,
    connects_per_s: f64,
    catch_up_msgs: u64,
    catch_up_mismatched: usize,
    group_msgs: u64,
    /// Over the first message's scheduled send to the last delivery.
    group_msgs_per_s: f64,
    fanout_deliveries: u64,
    fanout_deliveries_per_s: f64,
    group_ack_us: Summary,
    group_last_member_us: Summary,
    group_median_member_us: Summary,
    group_each_member_us: Summary,
    group_send_lag_us: Summary,
    pair_msgs: u64,
    pair_phase1_us: Summary,
    pair_phase2_us: Summary,
    pair_p50_ratio: f64,
    pair_p99_ratio: f64,
    pair_send_lag_us: Summary,
    phase1: PhaseJson,
    phase2: PhaseJson,
    server_cpu_us_per_fanout_delivery: f64,
    server_warnings: u64,
    server_errors: u64,
}

impl JsonLine {
    fn new(server: &Server, options: &GroupOptions, o: &Outcome) -> JsonLine {
        let span_s = o.fan.last_delivery_ns.saturating_sub(o.fan.first_send_ns) as f64 / 1e9;
        let per_s = |n: u64| round1(n as f64 / span_s.max(1e-9));
        let group_msgs = o.sent.sent_ns.len() as u64;
        let (phase1, phase2) = (o.pairs.phase1.summary(), o.pairs.phase2.summary());
        let (warnings, errors, _) = server.stderr_summary();
        JsonLine {
            bench: "group",
            members: options.members,
            online: options.online,
            pairs: options.pairs,
            pair_rate: options.pair_rate,
            group_rate: options.group_rate,
            warmup_s: options.warmup.as_secs_f64(),
            seconds: options.phase.as_secs_f64(),
            shards: server.shards(),
            durability: server.durability().as_str(),
            encoding: "binary",
            setup_s: round3(o.setup.as_secs_f64()),
            connect_s: round3(o.connect.as_secs_f64()),
            connects_per_s: round1(options.online as f64 / o.connect.as_secs_f64().max(1e-9)),
            catch_up_msgs: o.catch_up.msgs,
            catch_up_mismatched: o.catch_up.mismatched,
            group_msgs,
            group_msgs_per_s: per_s(group_msgs),
            fanout_deliveries: o.fan.deliveries,
            fanout_deliveries_per_s: per_s(o.fan.deliveries),
            group_ack_us: o.sent.acks.summary(),
            group_last_member_us: o.fan.last.summary(),
            group_median_member_us: o.fan.median.summary(),
            group_each_member_us: o.fan.each.summary(),
            group_send_lag_us: o.sent.send_lag.summary(),
            pair_msgs: o.pairs.delivered,
            pair_p50_ratio: ratio(phase2.p50, phase1.p50),
            pair_p99_ratio: ratio(phase2.p99, phase1.p99),
            pair_phase1_us: phase1,
            pair_phase2_us: phase2,
            pair_send_lag_us: o.pairs.send_lag.summary(),
            phase1: PhaseJson::new(&o.phases[0]),
            phase2: PhaseJson::new(&o.phases[1]),
            server_cpu_us_per_fanout_delivery: fanout_cost(&o.phases, o.fan.deliveries),
            server_warnings: warnings,
            server_errors: errors,
        }
    }
}

/// `n thing` or `n things`.
fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { round3(a / b) } else { 0.0 }
}

/// Server CPU per fan-out delivery, in µs: phase 2's CPU less what phase
/// 1's rate (the pairs alone) would have used over phase 2's wall time.
fn fanout_cost(phases: &[Phase; 2], deliveries: u64) -> f64 {
    let [one, two] = phases;
    let baseline = one.server_cpu.as_secs_f64() / one.wall.as_secs_f64().max(1e-9);
    let extra = two.server_cpu.as_secs_f64() - baseline * two.wall.as_secs_f64();
    round3(extra.max(0.0) * 1e6 / deliveries.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_above_baseline() {
        let phase = |wall: u64, cpu_ms: u64| Phase {
            wall: Duration::from_secs(wall),
            server_cpu: Duration::from_millis(cpu_ms),
            client_cpu: Duration::ZERO,
        };
        // 0.1 core alone; 0.6 core with 100,000 deliveries over 10 s.
        let cost = fanout_cost(&[phase(10, 1_000), phase(10, 6_000)], 100_000);
        assert!((cost - 50.0).abs() < 1e-9, "{cost}");
        assert!(fanout_cost(&[phase(10, 1_000), phase(10, 500)], 10).abs() < 1e-12);
        assert!((ratio(3.0, 2.0) - 1.5).abs() < 1e-12);
        assert!(ratio(3.0, 0.0).abs() < 1e-12);
    }
}
