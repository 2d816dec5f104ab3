# GetCallerIdentity with the AWS SDK for Ruby (aws-sdk-core) and its default credential chain,
# as a user's program would. The STS endpoint of the test double comes from RB_STS_ENDPOINT.
# Prints the caller's ARN; on failure the error on stderr and exit 1. Used by
# tests/test_sdk_matrix.py.
require "aws-sdk-core"

begin
  options = ENV["RB_STS_ENDPOINT"] ? { endpoint: ENV["RB_STS_ENDPOINT"] } : {}
  puts Aws::STS::Client.new(**options).get_caller_identity.arn
rescue StandardError => e
  warn "caller_identity.rb: #{e.class}: #{e.message}"
  exit 1
end
