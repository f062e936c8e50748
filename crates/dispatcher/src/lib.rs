//! The backend-agnostic channel data plane.
