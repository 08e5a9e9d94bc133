using Vhost.Interop;
using Vhost.Protocol;
using Vhost.Testing.FrontEnd;

namespace Vhost.Tests.FrontEnd;

public class DeviceSetupTests
{
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(5);

    [Fact]
    public void Split_bring_up_sends_the_standard_sequence_with_acks()
    {
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket).Start();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueCount = 2, QueueSize = 64 });

        // Dirty logging, IOMMU and packed rings are offered but must not be accepted by default.
        Assert.Equal(back.Features & ~(VirtioFeature.Bit(VirtioFeature.LogAll) | VirtioFeature.Bit(VirtioFeature.AccessPlatform) |
            VirtioFeature.Bit(VirtioFeature.RingPacked)), setup.AckedFeatures);
        Assert.Equal(DeviceSetupOptions.ProtocolBits(ProtocolFeature.Mq, ProtocolFeature.ReplyAck, ProtocolFeature.Config, ProtocolFeature.Status),
            setup.AckedProtocolFeatures);
        Assert.Equal(4UL, setup.ReportedQueueNum);
        Assert.Null(setup.ReportedMaxMemSlots);

        var msgs = back.ReceivedList;
        VhostUserRequest[] perQueue =
        [
            VhostUserRequest.SetVringNum, VhostUserRequest.SetVringAddr, VhostUserRequest.SetVringBase,
            VhostUserRequest.SetVringCall, VhostUserRequest.SetVringKick,
        ];
        Assert.Equal(
            [
                VhostUserRequest.SetOwner, VhostUserRequest.GetFeatures, VhostUserRequest.GetProtocolFeatures,
                VhostUserRequest.SetProtocolFeatures, VhostUserRequest.GetQueueNum, VhostUserRequest.SetFeatures,
                VhostUserRequest.SetMemTable, .. perQueue, .. perQueue,
                VhostUserRequest.SetVringEnable, VhostUserRequest.SetVringEnable,
            ],
            msgs.Select(m => m.Request).ToArray());
        // REPLY_ACK is used once negotiated, not before.
        Assert.False(msgs[0].Header.NeedsReply);
        Assert.True(msgs.Single(m => m.Request == VhostUserRequest.SetMemTable).Header.NeedsReply);

        var addrMsg = msgs.First(m => m.Request == VhostUserRequest.SetVringAddr);
        var addr = VhostUserPayload.ReadVringAddress(addrMsg.Payload);
        var q0 = setup[0];
        Assert.Equal(q0.Address, addr);
        Assert.Equal(setup.Memory.Uva(q0.DescGpa), addr.DescUserAddr);
        Assert.Equal(setup.Memory.Uva(q0.AvailGpa), addr.AvailUserAddr);
        Assert.Equal(setup.Memory.Uva(q0.UsedGpa), addr.UsedUserAddr);
        Assert.NotEqual(q0.DescGpa, addr.DescUserAddr);
        Assert.Equal(0UL, q0.DescGpa % 4096);
        Assert.Equal(0UL, q0.AvailGpa % 4096);
        Assert.Equal(0UL, q0.UsedGpa % 4096);
        Assert.Equal((16UL * 64, 6UL + 2 * 64, 6UL + 8 * 64), (q0.Desc.Length, q0.Avail.Length, q0.Used.Length));
        Assert.Equal(64, q0.Size);
        Assert.False(q0.Packed);

        var baseMsg = msgs.First(m => m.Request == VhostUserRequest.SetVringBase);
        Assert.Equal(new VringState(0, 0), VhostUserPayload.ReadVringState(baseMsg.Payload));
        var enable = msgs.Last(m => m.Request == VhostUserRequest.SetVringEnable);
        Assert.Equal(new VringState(1, 1), VhostUserPayload.ReadVringState(enable.Payload));
    }

    [Fact]
    public void Kick_reaches_the_back_end_and_calls_reach_the_test()
    {
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket).Start();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueCount = 1 });

        var msgs = back.ReceivedList;
        var kickFd = msgs.Single(m => m.Request == VhostUserRequest.SetVringKick).Fds.Single();
        var callFd = msgs.Single(m => m.Request == VhostUserRequest.SetVringCall).Fds.Single();

        setup[0].Kick();
        Assert.True(Poll.WaitReadable(kickFd, 1000));
        Assert.Equal(1UL, EventFd.Consume(kickFd));

        Assert.False(setup[0].WaitCall(TimeSpan.FromMilliseconds(50)));
        EventFd.Signal(callFd);
        Assert.True(setup[0].WaitCall(Long));
        Assert.False(setup[0].WaitCall(TimeSpan.FromMilliseconds(50)));
    }

    [Fact]
    public void Packed_layout_event_areas_and_wrap_counter()
    {
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket).Start();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueCount = 1, QueueSize = 128, Packed = true });

        Assert.True(VirtioFeature.Has(setup.AckedFeatures, VirtioFeature.RingPacked));
        var q = setup[0];
        Assert.True(q.Packed);
        Assert.Equal((16UL * 128, 4UL, 4UL), (q.Desc.Length, q.DriverEvent.Length, q.DeviceEvent.Length));
        var baseMsg = back.ReceivedList.Single(m => m.Request == VhostUserRequest.SetVringBase);
        Assert.Equal(0x8000u, VhostUserPayload.ReadVringState(baseMsg.Payload).Num);
    }

    [Fact]
    public void Packed_is_refused_when_not_offered()
    {
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket) { Features = VirtioFeature.Bit(VirtioFeature.Version1) }.Start();
        Assert.Throws<NotSupportedException>(() => DeviceSetup.Run(fe, new DeviceSetupOptions { Packed = true }));
    }

    [Fact]
    public void Without_protocol_features_there_is_no_enable_and_no_reply_ack()
    {
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket) { Features = VirtioFeature.Bit(VirtioFeature.Version1) }.Start();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueCount = 1, PollingKick = true, PollingCall = true });

        Assert.False(setup.ProtocolFeaturesNegotiated);
        // The last message must have reached the back-end before its list is read.
        Assert.True(back.WaitFor(9, Long));
        var msgs = back.ReceivedList;
        Assert.DoesNotContain(msgs, m => m.Request is VhostUserRequest.GetProtocolFeatures or VhostUserRequest.SetVringEnable);
        Assert.All(msgs, m => Assert.False(m.Header.NeedsReply));
        var kick = msgs.Single(m => m.Request == VhostUserRequest.SetVringKick);
        Assert.Empty(kick.Fds);
        Assert.Equal(0x100UL, kick.ReadU64());
        Assert.Null(setup[0].KickFd);
        Assert.Throws<InvalidOperationException>(() => setup[0].Kick());
    }

    [Fact]
    public void Qemu_order_negotiates_protocol_features_before_set_owner()
    {
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket).Start();
        using var setup = DeviceSetup.Run(fe, new DeviceSetupOptions { QueueCount = 1, OwnerFirst = false });
        var requests = back.ReceivedList.Select(m => m.Request).ToList();
        Assert.True(requests.IndexOf(VhostUserRequest.SetProtocolFeatures) < requests.IndexOf(VhostUserRequest.SetOwner));
        Assert.Equal(VhostUserRequest.GetFeatures, requests[0]);
    }

    [Fact]
    public void A_nack_stops_the_bring_up()
    {
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket) { Nack = [VhostUserRequest.SetVringAddr] }.Start();
        var e = Assert.Throws<InvalidOperationException>(() => DeviceSetup.Run(fe, new DeviceSetupOptions { QueueCount = 1 }));
        Assert.Contains("SET_VRING_ADDR", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Steps_can_be_run_one_by_one_with_caller_memory()
    {
        using var mem = new FrontEndMemory();
        mem.AddRegion(0x100000, 0x100000, mmapOffset: 0x1000);
        using var fe = TestFrontEnd.CreatePair(out var backSocket);
        using var back = new ScriptedBackEnd(backSocket).Start();
        using var setup = new DeviceSetup(fe, new DeviceSetupOptions { QueueCount = 1 }, mem);
        setup.Negotiate();
        setup.SendMemTable();
        var q = setup.SetUpQueue(0);
        Assert.Same(q, setup[0]);
        Assert.Equal(42u, setup.StopQueue(0));
        var table = back.ReceivedList.Single(m => m.Request == VhostUserRequest.SetMemTable);
        Assert.Equal(mem.Regions[0].Info, VhostUserPayload.ReadMemoryTable(table.Payload).Regions.Single());
    }
}
