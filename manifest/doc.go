// Package manifest is part of ferry.
package manifest
