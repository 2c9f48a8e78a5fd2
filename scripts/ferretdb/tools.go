//go:build tools

// Package tools pins the FerretDB server that tests and local development run as
// the embedded MongoDB wire-protocol database. go.mod and go.sum fix every module
// version, so each machine builds the same binary and the build never asks the
// proxy for version lists. scripts/setup.sh builds it (from a vendored copy, to add
// the version file FerretDB's own release process generates).
package tools

import (
	_ "github.com/FerretDB/FerretDB/cmd/ferretdb"
	// Decodes stored documents in place of encoding/json (patches/goccy-json-decoding.patch).
	_ "github.com/goccy/go-json"
)
