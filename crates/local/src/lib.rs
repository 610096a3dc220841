//! imgpipe on one machine: filesystem object store, SQLite metadata, notifier, and the runner that executes the state machine definition.
