// Package bundle is part of ferry.
package bundle
