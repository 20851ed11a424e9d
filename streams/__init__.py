"""Stream processing with faust-streaming: the feedback join and online metrics."""
