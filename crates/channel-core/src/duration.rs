//! ISO-8601 durations as Knative writes them (`PT5S`, `PT0.5S`, `P1DT2H`).
