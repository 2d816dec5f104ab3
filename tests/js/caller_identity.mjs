// GetCallerIdentity with the AWS SDK for JavaScript v3, the way a user's program would do it:
// no credentials, region or endpoint in code. The default credential chain finds the broker
// through AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN, the region
// comes from AWS_REGION / AWS_DEFAULT_REGION and the STS endpoint from AWS_ENDPOINT_URL_STS.
//
// Prints the caller's ARN on stdout; on failure prints the error on stderr and exits 1.
// Used by tests/test_sdk_clients.py.
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";

try {
  const client = new STSClient({});
  const identity = await client.send(new GetCallerIdentityCommand({}));
  process.stdout.write(`${identity.Arn}\n`);
} catch (error) {
  const detail = [error?.name, error?.Code, error?.Message].filter(Boolean).join(" ");
  process.stderr.write(`caller_identity.mjs: ${error?.message ?? error}${detail ? ` (${detail})` : ""}\n`);
  process.exitCode = 1;
}
