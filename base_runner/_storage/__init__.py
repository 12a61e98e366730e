"""The database and the data dir: the engine and its driver, the write gate, the file's checks and repairs, durable writes."""
