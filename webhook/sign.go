package webhook

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// signer sets an endpoint's signature headers on a delivery.
type signer func(h http.Header, id string, now time.Time, body []byte) error

// newSigner returns the endpoint's scheme. hmac-sha256 is the Standard
// Webhooks one, made by its reference library, so that receivers can
// verify with any Standard Webhooks verifier.
func newSigner(e Endpoint) (signer, error) {
	switch e.Signature {
	case SignMD5:
		// The source platform's scheme: MD5 of companyId + timestamp (ms)
		// + random code + app key. Weak (MD5, no body in the digest): for
		// receivers built for it only.
		return func(h http.Header, _ string, now time.Time, _ []byte) error {
			var rnd [8]byte
			_, _ = rand.Read(rnd[:])
			ts, code := strconv.FormatInt(now.UnixMilli(), 10), hex.EncodeToString(rnd[:])
			sum := md5.Sum([]byte(e.CompanyID + ts + code + e.Secret))
			h.Set("X-Log-TimeStamp", ts)
			h.Set("X-Log-RandomCode", code)
			h.Set("X-Log-Sign", hex.EncodeToString(sum[:]))
			return nil
		}, nil
	default:
		wh, err := standardwebhooks.NewWebhook(e.Secret)
		if err != nil {
			return nil, fmt.Errorf("webhook %s: secret: %w", e.Name, err)
		}
		return func(h http.Header, id string, now time.Time, body []byte) error {
			sig, err := wh.Sign(id, now, body)
			if err != nil {
				return err
			}
			h.Set("Webhook-Id", id)
			h.Set("Webhook-Timestamp", strconv.FormatInt(now.Unix(), 10))
			h.Set("Webhook-Signature", sig)
			return nil
		}, nil
	}
}
