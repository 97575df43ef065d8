"""Human review of uncertain LLM-judge results: the queue and decisions files and a small local web page."""
