"""Campaigns: scenario files, stage schedules, thresholds, the runner and the capacity search."""
