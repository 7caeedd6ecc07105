using System.Net;
using Ledger.Webhooks;

namespace Ledger.Tests.Webhooks;

public sealed class WebhookUnitTests
{
    [Fact]
    public void ten_attempts_over_an_hour_wait_doubling_times_that_add_up_to_the_hour()
    {
        var delays = new WebhookOptions { MaxAttempts = 10, RetryWindowSeconds = 3600 }.RetryDelays();
        Assert.Equal(9, delays.Length);
        Assert.Equal(3600, delays.Sum(d => d.TotalSeconds), precision: 3);
        for (var i = 1; i < delays.Length; i++) Assert.Equal(2 * delays[i - 1].TotalSeconds, delays[i].TotalSeconds, precision: 3);
        Assert.Empty(new WebhookOptions { MaxAttempts = 1 }.RetryDelays());
    }

    [Fact]
    public void the_delivery_id_is_derived_from_the_subscription_and_the_source()
    {
        Assert.Equal(WebhookDelivery.IdFor("sub_a", "event:7:run.lost"), WebhookDelivery.IdFor("sub_a", "event:7:run.lost"));
        Assert.NotEqual(WebhookDelivery.IdFor("sub_a", "event:7:run.lost"), WebhookDelivery.IdFor("sub_b", "event:7:run.lost"));
        Assert.NotEqual(WebhookDelivery.IdFor("sub_a", "event:7:run.lost"), WebhookDelivery.IdFor("sub_a", "event:8:run.lost"));
    }

    [Theory]
    [InlineData("127.0.0.1", false), InlineData("10.0.0.1", false), InlineData("172.16.0.1", false), InlineData("172.32.0.1", true)]
    [InlineData("192.168.0.1", false), InlineData("169.254.169.254", false), InlineData("100.64.0.1", false), InlineData("0.0.0.0", false)]
    [InlineData("::1", false), InlineData("fe80::1", false), InlineData("fd00::1", false), InlineData("::ffff:10.0.0.1", false)]
    [InlineData("93.184.215.14", true), InlineData("2606:4700::1111", true)]
    public void only_public_addresses_are_public(string address, bool expected) =>
        Assert.Equal(expected, WebhookTargets.IsPublic(IPAddress.Parse(address)));

    [Fact]
    public void the_signature_is_the_lower_case_hex_hmac_of_the_raw_body()
    {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        Assert.Equal("sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            WebhookSignature.Sign("Jefe", "what do ya want for nothing?"u8.ToArray()));
    }
}
