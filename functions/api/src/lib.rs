//! Lambda `api`: the management API (in progress).
