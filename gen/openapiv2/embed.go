// Package openapiv2 embeds the OpenAPI (Swagger 2.0) document that
// protoc-gen-openapiv2 generates from proto/ into this folder, so that the
// gateway can serve it. This file is the only one here written by hand;
// `make generate` leaves it in place.
package openapiv2

import _ "embed"

// Document is the OpenAPI document of the colpali.v1 REST API, as JSON.
//
//go:embed colpali.swagger.json
var Document []byte
