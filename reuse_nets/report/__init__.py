"""Reading results back: statistics, plots, the Markdown/HTML report, and results as pandas DataFrames."""
