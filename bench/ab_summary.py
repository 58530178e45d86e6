#!/usr/bin/python3
"""Summarizes an A/B sitting of bench/run.py runs (docs/benchmarks.md).

    bench/ab_summary.py DIR PREFIX [--json OUT]

DIR holds one sub-directory per run, named PREFIX-base-N and PREFIX-new-N
(N = 1, 2, ... in the order they ran, base and new alternating), each with
the run.py results JSON (run-*.json). For each build it pools every run's
max pairs (ceiling and max, records/s end to end) and every "latency 50%"
run, and prints the medians, the ratio new / base of the medians, and the
per-sitting figures, so the noise between sittings is visible next to the
difference between the builds."""
import glob
import json
import os
import statistics
import sys


def load(d):
    f = sorted(glob.glob(os.path.join(d, "run-*.json")))
    return json.load(open(f[-1])) if f else None


def summarize(root, prefix):
    out = {"dir": root, "prefix": prefix, "builds": {}}
    for b in ("base", "new"):
        runs = []
        for d in sorted(glob.glob(os.path.join(root, "%s-%s-*" % (prefix, b))),
                        key=lambda p: int(p.rsplit("-", 1)[1])):
            j = load(d)
            if j:
                runs.append((os.path.basename(d), j))
        maxes, ceils, ratios, p99s, p50s, sittings, cpu = [], [], [], [], [], [], []
        commit = None
        for name, j in runs:
            commit = j.get("floorpost")
            mp = j.get("max_pairs") or []
            maxes += [x["max"] for x in mp]
            ceils += [x["ceiling"] for x in mp]
            ratios += [x["ratio"] for x in mp]
            lat = [r for r in j["runs"] if r["name"].startswith("latency 50%")]
            p99s += [r["fpload"]["latency_ms"]["p99"] for r in lat]
            p50s += [r["fpload"]["latency_ms"]["p50"] for r in lat]
            cpu += [r["cpu_s_per_m_records"] for r in j["runs"]
                    if r["name"].startswith("max") and r["cpu_s_per_m_records"]]
            sittings.append({"run": name, "median_max": j.get("max_records_per_s"),
                             "ratio_to_ceiling": j.get("ratio_to_ceiling"),
                             "p99_50pct": [r["fpload"]["latency_ms"]["p99"] for r in lat],
                             "loadavg_start": j.get("loadavg_start")})
        med = lambda v: statistics.median(v) if v else None  # noqa: E731
        out["builds"][b] = {"floorpost": commit, "runs": len(runs), "max_runs": len(maxes),
                            "median_max": med(maxes), "mean_max": statistics.mean(maxes)
                            if maxes else None, "median_ceiling": med(ceils),
                            "median_ratio_to_ceiling": med(ratios),
                            "latency_runs": len(p99s), "median_p99_50pct": med(p99s),
                            "median_p50_50pct": med(p50s), "median_cpu_s_per_m": med(cpu),
                            "sittings": sittings}
    bb, nb = out["builds"]["base"], out["builds"]["new"]
    r = lambda k: (nb[k] / bb[k]) if bb.get(k) and nb.get(k) else None  # noqa: E731
    out["new_over_base"] = {k: r(k) for k in ("median_max", "mean_max", "median_ratio_to_ceiling",
                                              "median_p99_50pct", "median_p50_50pct",
                                              "median_cpu_s_per_m")}
    return out


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    s = summarize(sys.argv[1], sys.argv[2])
    for b in ("base", "new"):
        x = s["builds"][b]
        print("%-4s %s: %d runs, %d max runs: median max %.3f M/s (mean %.3f), ceiling %.3f, "
              "ratio %.1f %%; %d latency runs at 50 %%: median p99 %s ms, p50 %s ms; CPU %s s/M"
              % (b, x["floorpost"], x["runs"], x["max_runs"], (x["median_max"] or 0) / 1e6,
                 (x["mean_max"] or 0) / 1e6, (x["median_ceiling"] or 0) / 1e6,
                 100 * (x["median_ratio_to_ceiling"] or 0), x["latency_runs"],
                 x["median_p99_50pct"], x["median_p50_50pct"], x["median_cpu_s_per_m"]))
        for t in x["sittings"]:
            print("     %s: median max %.3f, ratio %.1f %%, p99 at 50 %% %s, load %s" % (
                t["run"], (t["median_max"] or 0) / 1e6, 100 * (t["ratio_to_ceiling"] or 0),
                t["p99_50pct"], t["loadavg_start"]))
    print("new / base: " + ", ".join("%s %.3f" % (k, v) for k, v in s["new_over_base"].items()
                                      if v))
    if "--json" in sys.argv:
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            json.dump(s, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
