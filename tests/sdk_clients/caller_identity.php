<?php
// GetCallerIdentity with AsyncAws (php-async-aws-core) and its default credential chain, as a
// user's program would. The STS endpoint of the test double comes from RB_STS_ENDPOINT.
// Prints the caller's ARN; on failure the error on stderr and exit 1. Used by
// tests/test_sdk_matrix.py.
require getenv('RB_ASYNC_AWS_AUTOLOAD') ?: '/usr/share/php/AsyncAws/Core/autoload.php';

use AsyncAws\Core\Sts\StsClient;

try {
    $endpoint = getenv('RB_STS_ENDPOINT');
    $client = new StsClient($endpoint ? ['endpoint' => $endpoint] : []);
    echo $client->getCallerIdentity()->getArn(), "\n";
} catch (\Throwable $e) {
    fwrite(STDERR, 'caller_identity.php: ' . get_class($e) . ': ' . $e->getMessage() . "\n");
    exit(1);
}
