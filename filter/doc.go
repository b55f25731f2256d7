// Package filter is part of ferry.
package filter
