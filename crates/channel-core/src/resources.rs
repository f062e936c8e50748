//! Knative resources, field for field.
