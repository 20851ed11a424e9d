"""Services driftloop runs on: the embedded broker and Redis, topics, client factories."""
