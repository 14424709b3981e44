package bootstrap

import (
	"fmt"
	"strings"
	"testing"
)

func TestGitHubNeverPrintsItsToken(t *testing.T) {
	g := GitHub{Token: "gho_CANARY-redact-5e6f", User: "me"}
	for _, format := range []string{"%v", "%+v", "%s", "%#v"} {
		if s := fmt.Sprintf(format, g); strings.Contains(s, "CANARY") || !strings.Contains(s, "redacted") {
			t.Errorf("%s shows %q", format, s)
		}
	}
}
