// Package push is part of ferry.
package push
