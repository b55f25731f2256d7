// Package mapping is part of ferry.
package mapping
