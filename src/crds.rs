//! JSON Schemas ("CRDs") generated from our own types.
