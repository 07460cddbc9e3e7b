package broker

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// The OpenAPI document, loaded and validated once (kin-openapi).
var openAPI = sync.OnceValues(func() (routers.Router, error) {
	doc, err := openapi3.NewLoader().LoadFromFile("../docs/openapi.yaml")
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	doc.Servers = nil // the tests' brokers listen on ports of their own
	return legacy.NewRouter(doc)
})

// docs/openapi.yaml is a valid OpenAPI document, and every operation has
// a unique operationId.
func TestOpenAPIIsValid(t *testing.T) {
	if _, err := openAPI(); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	doc, _ := openapi3.NewLoader().LoadFromFile("../docs/openapi.yaml")
	ids := map[string]string{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.OperationID == "" {
				t.Errorf("%s %s has no operationId", method, path)
			}
			if other, dup := ids[op.OperationID]; dup {
				t.Errorf("operationId %s of %s %s is also %s's", op.OperationID, method, path, other)
			}
			ids[op.OperationID] = method + " " + path
		}
	}
}

// checkResponse validates a live REST response against the document: its
// status is documented for the route, and a JSON body fits its schema.
func checkResponse(tb testing.TB, req *http.Request, resp *http.Response, body []byte) {
	tb.Helper()
	router, err := openAPI()
	if err != nil {
		tb.Fatalf("docs/openapi.yaml: %v", err)
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		tb.Errorf("%s %s: not in docs/openapi.yaml: %v", req.Method, req.URL.Path, err)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		tb.Errorf("%s %s answered %d, which docs/openapi.yaml does not describe: %v\nbody: %s", req.Method, req.URL, resp.StatusCode,
			strings.SplitN(err.Error(), "\n", 2)[0], cut(body, 300))
	}
}

func cut(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
