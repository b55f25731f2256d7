// Package filter selects the tags of a repository from the items of a
// dregsy-style `tags:` list.
//
// The semantics follow dregsy's tag sets (internal/pkg/tags/tagset.go in
// xelalexv/dregsy) so that existing dregsy mapping files select the same tags
// under ferry. See docs/filters.md for the rules and a worked example.
//
// The package is pure: it does no I/O and imports nothing from the CLI. The
// caller fetches the tag list when [Filter.NeedsList] says so and hands it to
// [Filter.Select].
package filter
