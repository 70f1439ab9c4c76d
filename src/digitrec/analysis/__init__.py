"""Analysis: evaluation reports and pictures, explanations of single predictions."""
