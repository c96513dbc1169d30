"""The spine: the three feeds' schemas and validation, Redis Streams, the pipeline runner, pure
aggregation, the Redis live state and the SQL store."""
