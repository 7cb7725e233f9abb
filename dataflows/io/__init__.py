"""Sources and sinks shared by the flows, one module per mechanism: Kafka in, ClickHouse and
Kafka out. Importers name the module they use."""
