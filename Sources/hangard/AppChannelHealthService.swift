import HangarRuntime
import NIOCore
import ServiceLifecycle

/// The apps' health probes as a `Service` of the daemon's group: probes every app with a `healthCheck` until the
/// group's graceful shutdown reaches it — after the node, later in the group, has drained every call — then stops
/// push delivery (messages in flight are given back) and closes every app channel.
struct AppChannelHealthService: Service {
    let channels: AppChannels
    let pushDelivery: PushDelivery
    let group: any EventLoopGroup

    func run() async {
        await cancelWhenGracefulShutdown { await channels.watchHealth(on: group) }
        pushDelivery.stopAll()
        channels.closeAll()
    }
}
