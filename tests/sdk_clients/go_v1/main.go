// GetCallerIdentity with the AWS SDK for Go v1 and its default credential chain, as a user's
// program would (session.NewSession: region from the environment, or from the config file
// when AWS_SDK_LOAD_CONFIG is set). The STS endpoint of the test double comes from
// RB_STS_ENDPOINT. Prints the caller's ARN; on failure the error on stderr and exit 1.
// Built and run by tests/test_sdk_matrix.py.
package main

import (
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/sts"
)

func main() {
	sess, err := session.NewSession()
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_v1:", err)
		os.Exit(1)
	}
	cfg := aws.NewConfig()
	if url := os.Getenv("RB_STS_ENDPOINT"); url != "" {
		cfg = cfg.WithEndpoint(url)
	}
	out, err := sts.New(sess, cfg).GetCallerIdentity(&sts.GetCallerIdentityInput{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_v1:", err)
		os.Exit(1)
	}
	fmt.Println(aws.StringValue(out.Arn))
}
