"""Summarises the kept patients: a report, and metrics as a JSON object for `expect`."""
import csv
import json
import statistics
import sys

table, report, metrics = sys.argv[1:4]
rows = list(csv.DictReader(open(table)))
volumes = [float(r["tumour_ml"]) for r in rows]
summary = {
    "patients": len(rows),
    "mean_tumour_ml": statistics.fmean(volumes) if volumes else 0.0,
}
with open(report, "w") as f:
    for key, value in summary.items():
        f.write(f"{key}: {value}\n")
with open(metrics, "w") as f:
    json.dump(summary, f)
