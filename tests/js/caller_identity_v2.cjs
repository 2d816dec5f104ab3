// GetCallerIdentity with the AWS SDK for JavaScript v2 (npm `aws-sdk`), as a user's program
// would: no credentials in code, the default chain (ECS / container provider) finds them.
// The STS endpoint of the test double comes from RB_STS_ENDPOINT (v2 has no
// AWS_ENDPOINT_URL_STS); a region from AWS_REGION or, with AWS_SDK_LOAD_CONFIG, the config.
// Prints the caller's ARN; on failure the error on stderr and exit 1. Used by
// tests/test_sdk_matrix.py.
process.env.AWS_SDK_JS_SUPPRESS_MAINTENANCE_MODE_MESSAGE = "1";
const AWS = require("aws-sdk");

const options = process.env.RB_STS_ENDPOINT ? { endpoint: process.env.RB_STS_ENDPOINT } : {};
new AWS.STS(options).getCallerIdentity({}).promise().then(
  (identity) => process.stdout.write(`${identity.Arn}\n`),
  (error) => {
    process.stderr.write(`caller_identity_v2.cjs: ${error?.code ?? ""} ${error?.message ?? error}\n`);
    process.exitCode = 1;
  },
);
