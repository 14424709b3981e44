// Command demo is the quickstart's workload: a tiny HTTP server, built into
// an image FROM scratch by `make demo-image`. It shows which environment
// keys it received — never their values — in its log and on /env, so that
// a user can see that secrets were delivered.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

func main() {
	addr := os.Getenv("DEMO_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	keys := envKeys()
	log.Printf("demo started; environment keys: %s", strings.Join(keys, ", "))
	if g := os.Getenv("GREETING"); g != "" {
		log.Printf("greeting: %s", g)
	}
	copyFiles(os.Getenv("DEMO_COPY"))
	mux := http.NewServeMux()
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	go func() {
		for range time.Tick(time.Minute) {
			log.Printf("still running")
		}
	}()
	log.Fatal(http.ListenAndServe(addr, mux))
}

// copyFiles copies each SRC:DST of a comma-separated list once at start,
// as a job reads its input and writes its output (to the directories of
// spec.buckets, say).
func copyFiles(list string) {
	for _, pair := range strings.Split(list, ",") {
		src, dst, ok := strings.Cut(pair, ":")
		if !ok {
			continue
		}
		b, err := os.ReadFile(src)
		if err == nil {
			err = os.WriteFile(dst, b, 0o644)
		}
		if err != nil {
			log.Printf("copy %s to %s: %v", src, dst, err)
			continue
		}
		log.Printf("copied %s to %s (%d bytes)", src, dst, len(b))
	}
}

// envKeys lists the names of the environment, sorted; values stay private.
func envKeys() []string {
	var keys []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
