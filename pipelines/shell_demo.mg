# Shell stages wrapping Python scripts: cached and rerun exactly when a script, the data or a
# parameter changes. Runs today (`medgen run pipelines/shell_demo.mg`); try `medgen plan` after
# editing `min_ml` or a row of shell_demo/volumes.csv.
pipeline shell_demo

stage cohort = shell {
  command = "python3 shell_demo/prep.py --min-ml {params.min_ml} {in.table} {out.cohort}"
  inputs  = {table: "shell_demo/volumes.csv", script: "shell_demo/prep.py"}
  sweep params in [{min_ml: 1.0}, {min_ml: 10.0}]
  outputs = [cohort]
}

stage summary = shell {
  command = "python3 shell_demo/summarise.py {cohort.cohort} {out.report} {out.metrics}"
  inputs  = {script: "shell_demo/summarise.py"}
  outputs = [report]
  metrics = [patients, mean_tumour_ml]
  expect patients >= 3
}
