"""Keeps the patients with a tumour of at least `--min-ml` millilitres."""
import argparse
import csv

parser = argparse.ArgumentParser()
parser.add_argument("--min-ml", type=float, required=True)
parser.add_argument("source")
parser.add_argument("target")
args = parser.parse_args()

with open(args.source) as src, open(args.target, "w", newline="") as dst:
    rows = [r for r in csv.DictReader(src) if float(r["tumour_ml"]) >= args.min_ml]
    writer = csv.DictWriter(dst, fieldnames=["patient", "tumour_ml", "age"])
    writer.writeheader()
    writer.writerows(rows)
print(f"kept {len(rows)} patients")
