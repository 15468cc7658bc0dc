"""Results of a run: summary.json, timeseries.csv, HdrHistogram logs and the HTML report."""
