// Package names owns ferry's name rules: the grammar of repository paths,
// tags and digests (from the OCI distribution specification), registry
// hosts, and Docker Hub's aliases with its "library/" rule.
//
// It is a leaf package: it imports no other ferry package and no third-party
// module, so that every package that handles names (mapping, bundle, serve,
// replicate, filter, internal/registry) can use the same rules. A
// dependency test (depcheck_test.go at the module root) keeps it so.
package names
