// Package registry is part of ferry.
package registry
