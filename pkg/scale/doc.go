// Package scale measures and predicts how a ringtrain job scales with the
// number of workers (scalebench).
//
// It offers three parts, usable on their own:
//
//   - Hosts: emulated machines on one Linux box. Each host is a network
//     namespace joined to a bridge by a veth pair whose two directions are
//     rate-limited with tbf, so that workers on different hosts reach each
//     other only through links of the given rate. It needs root and
//     iproute2 (ip, tc); netem (delay emulation) is not used. Close removes
//     every namespace, veth and bridge it made; NewHosts also removes those
//     left by a process that was killed before it could.
//   - Sweep: a series of real jobs (coordinator, embedded etcd and worker
//     processes) over a list of worker counts, each a few warm-up steps
//     and a fixed number of timed steps, with the per-step phase timings
//     the workers report (controlpb.StepPhases) aggregated per point.
//   - Cluster: the same points on a running cluster's registered workers:
//     each point is a benchmark round (controlpb Control.Bench) that the
//     coordinator's leader plans on N of them; the reports come through
//     Control.WatchMetrics. The job's own plan is given back after each.
//   - Model: a ring all-reduce alpha-beta model with bucket overlap
//     (Patarasuk and Yuan 2009; Gibiansky 2017), calibrated from a
//     measured compute profile and link, that predicts the step time and
//     scaling efficiency for any worker count and link rate.
//
// Results are written as scale.json, scale.csv, a Markdown table and
// scale.png.
package scale
