// GetCallerIdentity with the AWS SDK for Go v2 and its default credential chain, as a user's
// program would. The STS endpoint of the test double comes from RB_STS_ENDPOINT (Debian's
// release predates AWS_ENDPOINT_URL_STS). Prints the caller's ARN; on failure the error on
// stderr and exit 1. Built and run by tests/test_sdk_matrix.py.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func main() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_v2:", err)
		os.Exit(1)
	}
	client := sts.NewFromConfig(cfg, func(o *sts.Options) {
		if url := os.Getenv("RB_STS_ENDPOINT"); url != "" {
			o.EndpointResolver = sts.EndpointResolverFromURL(url)
		}
	})
	out, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "go_v2:", err)
		os.Exit(1)
	}
	fmt.Println(aws.ToString(out.Arn))
}
