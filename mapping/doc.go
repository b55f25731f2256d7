// Package mapping reads dregsy-style mapping files (tasks → mappings with
// from, to, tags and platform; keys dregsy uses and ferry does not are
// accepted and ignored) and resolves them into exact images: each tag
// filter applied to the source's tag list, each selected tag pinned to a
// digest with one HEAD, each distinct manifest fetched once.
//
// Sources applies ferry's one credential order (flags, the task's auth,
// --auth-file, docker keychain) to a task's source registry and hands out
// internal/registry handles; export, sync and resolution read upstream
// through it.
package mapping
